"""Molecule files: XYZ and SDF readers and writers, exchanging MoleculeSets (or (Z, positions) pairs to write).

Writers replace files atomically (temp file + rename); malformed files raise errors naming the file and line.
"""

from gaga.io.formats import read_molecules
from gaga.io.sdf import read_sdf, write_sdf
from gaga.io.xyz import read_xyz, read_xyz_folder, write_xyz, write_xyz_folder

__all__ = [
    "read_molecules",
    "read_sdf",
    "read_xyz",
    "read_xyz_folder",
    "write_sdf",
    "write_xyz",
    "write_xyz_folder",
]

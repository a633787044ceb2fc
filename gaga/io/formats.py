"""Read molecules from whatever a generator wrote: an SDF file, a (multi-molecule) XYZ file or a folder of XYZ files.

The format is chosen from the path: a folder, or the file suffix.
"""

from __future__ import annotations

from pathlib import Path

from gaga.data.molecules import MoleculeSet
from gaga.io.sdf import read_sdf
from gaga.io.xyz import read_xyz, read_xyz_folder

SDF_SUFFIXES = (".sdf", ".sd", ".mol")


def read_molecules(path: str | Path) -> MoleculeSet:
    """All molecules at `path` (SDF, XYZ or a folder of .xyz files)."""
    path = Path(path)
    if path.is_dir():
        return read_xyz_folder(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() in SDF_SUFFIXES:
        return read_sdf(path)
    if path.suffix.lower() == ".xyz":
        return read_xyz(path)
    raise ValueError(f"{path}: unknown molecule file type {path.suffix!r}; expected .sdf, .xyz or a folder of .xyz")

"""SDF files through RDKit (imported when called): molecules with 3D coordinates and EDM's inferred bonds.

Reading keeps every atom as written, hydrogens included, and does not sanitise, so invalid molecules load too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gaga.atomic_files import write_text_atomically
from gaga.data.molecules import MoleculeSet, to_molecule_set
from gaga.io.text import read_lines

RECORD_END = "$$$$"


def write_sdf(path: str | Path, molecules: MoleculeSet | Iterable, dataset: str = "qm9") -> Path:
    """Write molecules to an SDF file (atomically), each with its coordinates and EDM's bonds for `dataset`."""
    from rdkit import Chem

    from gaga.metrics.rdkit_molecules import molecule_from_coordinates

    molecules = to_molecule_set(molecules, str(path))
    blocks = []
    for index, (atomic_numbers, positions) in enumerate(molecules):
        molecule = molecule_from_coordinates(atomic_numbers, positions, dataset)
        molecule.SetProp("_Name", f"molecule {index}")
        blocks.append(Chem.MolToMolBlock(molecule) + RECORD_END + "\n")
    return write_text_atomically(path, "".join(blocks))


def read_sdf(path: str | Path) -> MoleculeSet:
    """Atoms and 3D coordinates of every record of an SDF file; ValueError naming the file, record and line."""
    from rdkit import Chem

    from gaga.metrics.rdkit_molecules import quiet_rdkit

    path = Path(path)
    lines = read_lines(path, "SDF")
    pairs = []
    with quiet_rdkit():
        for number, (first_line, block) in enumerate(_records(lines)):
            where = f"{path}, record {number} (line {first_line})"
            molecule = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
            if molecule is None:
                raise ValueError(f"{where}: RDKit cannot parse this molecule block; fix or remove the record")
            if molecule.GetNumConformers() == 0 or not molecule.GetConformer().Is3D():
                raise ValueError(f"{where}: the record has no 3D coordinates; write the molecule with 3D coordinates")
            atomic_numbers = np.array([atom.GetAtomicNum() for atom in molecule.GetAtoms()])
            if (atomic_numbers == 0).any():
                atom = int(np.argmax(atomic_numbers == 0))
                raise ValueError(f"{where}: atom {atom} is not an element (a query or R atom); replace it")
            pairs.append((atomic_numbers, molecule.GetConformer().GetPositions()))
    if not pairs:
        raise ValueError(f"{path}: no molecules in this SDF file")
    return to_molecule_set(pairs, str(path))


def _records(lines: list[str]) -> Iterable[tuple[int, str]]:
    """(1-based first line, text) of each non-blank record between `$$$$` lines."""
    start = 0
    for index, line in enumerate(lines + [RECORD_END]):
        if line.strip() == RECORD_END:
            block = lines[start:index]
            if any(text.strip() for text in block):
                yield start + 1, "\n".join(block) + "\n"
            start = index + 1

"""SDF files through RDKit (imported when called): molecules with 3D coordinates and EDM's inferred bonds.

Reading keeps every atom as written, hydrogens included, and does not sanitise, so invalid molecules load too.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np

from gaga.atomic_files import write_text_atomically
from gaga.data.molecules import MoleculeSet, to_molecule_set
from gaga.io.text import MAX_RECORD_ATOMS, MoleculeFileError, checked_molecule_set, numbered_lines

RECORD_END = "$$$$"


def write_sdf(path: str | Path, molecules: MoleculeSet | Iterable, dataset: str = "qm9") -> Path:
    """Write molecules to an SDF file (atomically), each with its coordinates and EDM's bonds for `dataset`, and
    the molecule's `properties` (a conditional model's requested values) as SD data items."""
    from rdkit import Chem

    from gaga.metrics.rdkit_molecules import molecule_from_coordinates

    molecules = to_molecule_set(molecules, str(path))
    blocks = []
    for index, (atomic_numbers, positions) in enumerate(molecules):
        molecule = molecule_from_coordinates(atomic_numbers, positions, dataset)
        molecule.SetProp("_Name", f"molecule {index}")
        items = "".join(f">  <{name}>\n{values[index]:.6g}\n\n" for name, values in molecules.properties.items())
        blocks.append(Chem.MolToMolBlock(molecule) + items + RECORD_END + "\n")
    return write_text_atomically(path, "".join(blocks))


def read_sdf(path: str | Path) -> MoleculeSet:
    """Atoms and 3D coordinates of every record of an SDF file, streamed record by record; MoleculeFileError naming
    the file, record and line."""
    from rdkit import Chem

    from gaga.metrics.rdkit_molecules import quiet_rdkit

    path = Path(path)
    pairs = []
    with quiet_rdkit():
        for number, (first_line, block) in enumerate(_records(numbered_lines(path, "SDF"), path)):
            where = f"{path}, record {number} (line {first_line})"
            molecule = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
            if molecule is None:
                raise MoleculeFileError(f"{where}: RDKit cannot parse this molecule block; fix or remove the record")
            if molecule.GetNumConformers() == 0 or not molecule.GetConformer().Is3D():
                raise MoleculeFileError(
                    f"{where}: the record has no 3D coordinates; write the molecule with 3D coordinates"
                )
            atomic_numbers = np.array([atom.GetAtomicNum() for atom in molecule.GetAtoms()])
            if (atomic_numbers == 0).any():
                atom = int(np.argmax(atomic_numbers == 0))
                raise MoleculeFileError(f"{where}: atom {atom} is not an element (a query or R atom); replace it")
            pairs.append((atomic_numbers, molecule.GetConformer().GetPositions()))
    if not pairs:
        raise MoleculeFileError(f"{path}: no molecules in this SDF file; records end with a '{RECORD_END}' line")
    return checked_molecule_set(pairs, path)


def _records(lines: Iterable[tuple[int, str]], path: Path) -> Iterable[tuple[int, str]]:
    """(1-based first line, text) of each non-blank record between `$$$$` lines, at most MAX_RECORD_ATOMS lines each."""
    block, first = [], 1
    for number, line in chain(lines, [(0, RECORD_END)]):  # the file's end closes its last record
        if line.strip() == RECORD_END:
            if any(text.strip() for text in block):
                yield first, "\n".join(block) + "\n"
            block, first = [], number + 1
        elif len(block) > MAX_RECORD_ATOMS:
            raise MoleculeFileError(
                f"{path}, line {first}: a record longer than {MAX_RECORD_ATOMS} lines; SDF records end with "
                f"'{RECORD_END}' and gaga reads molecules of at most {MAX_RECORD_ATOMS} atoms"
            )
        else:
            block.append(line)

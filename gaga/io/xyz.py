"""XYZ files: one molecule per file, many concatenated in one file, or a folder of single-molecule files.

Record format: atom count, a comment line, then one line per atom: element (symbol or atomic number), x, y, z
in Angstrom; further columns (extended XYZ) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from gaga.atomic_files import write_text_atomically
from gaga.data.elements import PERIODIC_SYMBOLS, atomic_number
from gaga.data.molecules import MAX_ATOMIC_NUMBER, MoleculeSet, to_molecule_set
from gaga.io.text import MAX_RECORD_ATOMS, MoleculeFileError, checked_molecule_set, numbered_lines

XYZ_FIX = "each record is: atom count, comment line, then 'element x y z' per atom"


def format_xyz(atomic_numbers: np.ndarray, positions: np.ndarray, comment: str = "") -> str:
    """One XYZ record (element symbols, coordinates with 6 decimals)."""
    if "\n" in comment:
        raise ValueError(f"XYZ comment must be one line, got {comment!r}")
    lines = [str(len(atomic_numbers)), comment]
    for z, (x, y, w) in zip(
        np.asarray(atomic_numbers).tolist(), np.asarray(positions, dtype=np.float64).tolist(), strict=True
    ):
        lines.append(f"{_symbol(z):<2} {x:12.6f} {y:12.6f} {w:12.6f}")
    return "\n".join(lines) + "\n"


def write_xyz(path: str | Path, molecules: MoleculeSet | Iterable, comments: Sequence[str] | None = None) -> Path:
    """Write all molecules, one record after another, into one XYZ file (atomically); the default comment line names
    the molecule and its `properties` (a conditional model's requested values), e.g. `molecule 3 alpha=80.5`."""
    molecules = to_molecule_set(molecules, str(path))
    if comments is None:
        comments = [
            " ".join([f"molecule {i}", *(f"{name}={values[i]:.6g}" for name, values in molecules.properties.items())])
            for i in range(len(molecules))
        ]
    if len(comments) != len(molecules):
        raise ValueError(f"{path}: {len(comments)} comments for {len(molecules)} molecules")
    records = (format_xyz(z, pos, comment) for (z, pos), comment in zip(molecules, comments, strict=True))
    return write_text_atomically(path, "".join(records))


def write_xyz_folder(folder: str | Path, molecules: MoleculeSet | Iterable, prefix: str = "molecule") -> list[Path]:
    """Write each molecule to its own file `<folder>/<prefix>_<index>.xyz` (zero-padded); returns the paths."""
    molecules = to_molecule_set(molecules, str(folder))
    width = max(5, len(str(len(molecules) - 1)))
    return [
        write_text_atomically(Path(folder) / f"{prefix}_{index:0{width}d}.xyz", format_xyz(z, pos, f"molecule {index}"))
        for index, (z, pos) in enumerate(molecules)
    ]


def read_xyz(path: str | Path) -> MoleculeSet:
    """Every record of an XYZ file (one or many), streamed; MoleculeFileError naming the file and line of the first
    problem."""
    path = Path(path)
    lines = numbered_lines(path, "XYZ")
    records = []
    for number, line in lines:
        if not line.strip():  # blank lines between or after records
            continue
        count = _atom_count(line, path, number)
        parsed = []
        for index in range(count + 1):  # the comment line, then the atoms, parsed as they come
            item = next(lines, None)
            if item is None:
                raise MoleculeFileError(
                    f"{path}, line {number}: the record declares {count} atoms but the file ends after "
                    f"{len(parsed)} atom lines; {XYZ_FIX}"
                )
            if index:
                parsed.append(_atom(item[1], path, item[0]))
        records.append((np.array([z for z, _ in parsed]), np.array([xyz for _, xyz in parsed]).reshape(-1, 3)))
    if not records:
        raise MoleculeFileError(f"{path}: no XYZ records (the file is empty); {XYZ_FIX}")
    return checked_molecule_set(records, path)


def read_xyz_folder(folder: str | Path) -> MoleculeSet:
    """All molecules of every *.xyz file of a folder, files in natural name order (mol_2 before mol_10)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.xyz"), key=natural_key)
    if not files:
        raise MoleculeFileError(f"{folder}: no .xyz files in this folder; pass a folder of .xyz files or one file")
    pairs = [pair for file in files for pair in read_xyz(file)]
    return checked_molecule_set(pairs, folder)


def natural_key(path: Path) -> list:
    """Sort key comparing the digit runs of a file name as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _symbol(z: int) -> str:
    return PERIODIC_SYMBOLS[z] if 0 < z < len(PERIODIC_SYMBOLS) else str(z)


def _atom_count(line: str, path: Path, line_number: int) -> int:
    fields = line.split()
    if len(fields) != 1 or not _is_number(fields[0]) or int(fields[0]) == 0:
        raise MoleculeFileError(
            f"{path}, line {line_number}: expected a positive atom count, found {line.strip()[:80]!r}; {XYZ_FIX}"
        )
    if int(fields[0]) > MAX_RECORD_ATOMS:
        raise MoleculeFileError(
            f"{path}, line {line_number}: the record declares {fields[0]} atoms; gaga reads molecules of at most "
            f"{MAX_RECORD_ATOMS} atoms; {XYZ_FIX}"
        )
    return int(fields[0])


def _is_number(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts superscripts, which int() refuses)."""
    return text.isascii() and text.isdigit()


def _atom(line: str, path: Path, line_number: int) -> tuple[int, list[float]]:
    fields = line.split()
    where = f"{path}, line {line_number}"
    if len(fields) < 4:
        raise MoleculeFileError(f"{where}: expected 'element x y z', found {line.strip()[:80]!r}; {XYZ_FIX}")
    try:
        z = int(fields[0]) if _is_number(fields[0]) else atomic_number(fields[0])
        xyz = [float(value) for value in fields[1:4]]
    except ValueError as error:
        raise MoleculeFileError(f"{where}: {error} in {line.strip()[:80]!r}; {XYZ_FIX}") from None
    if not 0 < z <= MAX_ATOMIC_NUMBER:
        raise MoleculeFileError(f"{where}: atomic number {z} is outside 1..{MAX_ATOMIC_NUMBER}")
    if not np.isfinite(xyz).all():
        raise MoleculeFileError(f"{where}: coordinates {fields[1:4]} are not finite numbers; fix or remove the atom")
    return z, xyz

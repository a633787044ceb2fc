"""Molecules as (atomic numbers, positions) pairs, the form generators and file readers produce, to MoleculeSet.

One conversion with one set of checks, so every entry point rejects the same bad input the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gaga.data.molecules import MoleculeSet

MAX_ATOMIC_NUMBER = 118


def to_molecule_set(
    molecules: MoleculeSet | Iterable[tuple[np.ndarray, np.ndarray]], source: str = "molecules"
) -> MoleculeSet:
    """A validated MoleculeSet from a MoleculeSet or (Z [n], positions [n, 3]) pairs; ValueError naming
    `source` and the molecule when a record is empty, mis-shaped or not finite."""
    if not isinstance(molecules, MoleculeSet):
        pairs = [(np.asarray(z), np.asarray(pos, dtype=np.float64)) for z, pos in molecules]
        for index, (z, pos) in enumerate(pairs):
            if z.ndim != 1 or pos.shape != (len(z), 3):
                raise ValueError(
                    f"{source}: molecule {index} has atomic numbers of shape {z.shape} and positions of shape "
                    f"{pos.shape}; expected [n] and [n, 3]"
                )
            if len(z) and (z.min() < 1 or z.max() > MAX_ATOMIC_NUMBER):
                raise ValueError(f"{source}: molecule {index} has atomic numbers outside 1..{MAX_ATOMIC_NUMBER}")
        molecules = MoleculeSet(
            positions=np.concatenate([pos for _, pos in pairs]) if pairs else np.zeros((0, 3)),
            atomic_numbers=np.concatenate([z for z, _ in pairs]) if pairs else np.zeros(0),
            offsets=np.concatenate([[0], np.cumsum([len(z) for z, _ in pairs])]),
        )
    molecules.validate(source)
    empty = np.flatnonzero(molecules.num_atoms == 0)
    if empty.size:
        raise ValueError(f"{source}: molecule {int(empty[0])} has no atoms; remove it")
    return molecules


def read_lines(path: Path, kind: str) -> list[str]:
    """The lines of a text file; ValueError naming the file when it cannot be read as UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the {kind} file ({error})") from error

"""Atom-type encoders: which elements a dataset has and how they map to one-hot columns.

QM9 has H, C, N, O, F; GEOM-Drugs as EDM uses it has 16 elements (docs/references.md), which its readers check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERIODIC_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy "
    "Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi"
).split()
ATOMIC_NUMBER = {symbol: z for z, symbol in enumerate(PERIODIC_SYMBOLS) if z > 0}


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive); raises ValueError when unknown."""
    key = symbol.strip().capitalize()
    if key not in ATOMIC_NUMBER:
        raise ValueError(f"unknown element symbol {symbol!r}")
    return ATOMIC_NUMBER[key]


@dataclass(frozen=True)
class AtomEncoder:
    """Ordered element list of a dataset; column j of the one-hot is element `symbols[j]`."""

    name: str
    symbols: tuple[str, ...]

    @property
    def atomic_numbers(self) -> np.ndarray:
        return np.array([ATOMIC_NUMBER[s] for s in self.symbols], dtype=np.int64)

    @property
    def num_types(self) -> int:
        return len(self.symbols)

    def without_hydrogen(self) -> AtomEncoder:
        return AtomEncoder(self.name + "_noH", tuple(s for s in self.symbols if s != "H"))

    def encode(self, atomic_numbers: np.ndarray) -> np.ndarray:
        """Type index (0..num_types-1) of each atom; ValueError naming the first unknown element."""
        lookup = np.full(max(int(self.atomic_numbers.max()), int(np.max(atomic_numbers, initial=0))) + 1, -1)
        lookup[self.atomic_numbers] = np.arange(self.num_types)
        index = lookup[np.asarray(atomic_numbers, dtype=np.int64)]
        if (index < 0).any():
            bad = int(np.asarray(atomic_numbers)[index < 0][0])
            name = PERIODIC_SYMBOLS[bad] if 0 < bad < len(PERIODIC_SYMBOLS) else str(bad)
            raise ValueError(f"element {name} (Z={bad}) is not in the {self.name} atom types {list(self.symbols)}")
        return index

    def decode(self, type_index: np.ndarray) -> np.ndarray:
        """Atomic numbers of type indices."""
        return self.atomic_numbers[np.asarray(type_index, dtype=np.int64)]


QM9_ATOMS = AtomEncoder("qm9", ("H", "C", "N", "O", "F"))
DRUGS_ATOMS = AtomEncoder(
    "drugs", ("H", "B", "C", "N", "O", "F", "Al", "Si", "P", "S", "Cl", "As", "Br", "I", "Hg", "Bi")
)
ENCODERS = {"qm9": QM9_ATOMS, "drugs": DRUGS_ATOMS}


def first_unknown_element(atomic_numbers: np.ndarray) -> int | None:
    """Index of the first atom that is not one of the 16 GEOM-Drugs elements, or None."""
    bad = np.flatnonzero(~np.isin(atomic_numbers, DRUGS_ATOMS.atomic_numbers))
    return int(bad[0]) if bad.size else None


def describe_element(z: int) -> str:
    name = PERIODIC_SYMBOLS[z] if 0 < z < len(PERIODIC_SYMBOLS) else "unknown"
    return f"element {name} (Z={z}) is not one of the 16 GEOM-Drugs atom types {', '.join(DRUGS_ATOMS.symbols)}"

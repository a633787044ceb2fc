"""EDM's distance-based bond orders and atom stability, vectorised over all atom pairs of many molecules at once.

A pair is bonded with order k when 100 x distance (pm) is below the order-k table length plus its margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from gaga.data.elements import ENCODERS, AtomEncoder
from gaga.data.molecules import MoleculeSet
from gaga.metrics.bond_tables import ALLOWED_VALENCES, MARGIN_PM, bond_length

MAX_VALENCE = 8  # valence sums above this are never allowed; they are clipped to it before the lookup
PAIRS_PER_CHUNK = 2_000_000  # atom pairs whose distances are held in memory at once


@dataclass(frozen=True)
class BondRules:
    """Per-dataset lookup tables: bond thresholds by type pair, allowed valences by type.

    `thresholds_pm[k - 1, a, b]` is the distance (pm) below which types a and b form a bond of order >= k
    (-inf when the tables have no such bond). `rdkit_single_bonds` is EDM's GEOM choice of building RDKit
    molecules with every inferred bond single (qm9/rdkit_functions.py, limit_bonds_to_one=True), while
    stability still counts the full orders.
    """

    dataset: str
    encoder: AtomEncoder
    thresholds_pm: np.ndarray
    allowed_valence: np.ndarray
    rdkit_single_bonds: bool


@dataclass(frozen=True)
class Bonds:
    """Inferred bonds of a set of molecules: global atom indices first < second, sorted by first, and orders."""

    first: np.ndarray
    second: np.ndarray
    order: np.ndarray


@cache
def bond_rules(dataset: str) -> BondRules:
    """The EDM rules for "qm9" or "drugs" (same tables; drugs has 16 elements and single bonds in RDKit)."""
    if dataset not in ENCODERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(ENCODERS)}")
    encoder = ENCODERS[dataset]
    symbols = encoder.symbols
    thresholds = np.full((3, len(symbols), len(symbols)), -np.inf)
    for order in (1, 2, 3):
        for a, symbol_a in enumerate(symbols):
            for b, symbol_b in enumerate(symbols):
                length = bond_length(symbol_a, symbol_b, order)
                if length is not None:
                    thresholds[order - 1, a, b] = length + MARGIN_PM[order]
    # EDM only tests order k+1 once order k holds; counting the thresholds passed equals that when they nest.
    if not (thresholds[1:] <= thresholds[:-1]).all():
        raise ValueError("bond tables: a higher-order threshold exceeds a lower-order one; check bond_tables.py")
    allowed = np.zeros((len(symbols), MAX_VALENCE + 1), dtype=bool)
    for a, symbol in enumerate(symbols):
        allowed[a, list(ALLOWED_VALENCES[symbol])] = True
    return BondRules(dataset, encoder, thresholds, allowed, rdkit_single_bonds=dataset == "drugs")


def encode_types(molecules: MoleculeSet, rules: BondRules, source: str) -> np.ndarray:
    """Type index of every atom; ValueError naming `source` and the molecule whose element the dataset lacks."""
    try:
        return rules.encoder.encode(molecules.atomic_numbers)
    except ValueError as error:
        known = np.isin(molecules.atomic_numbers, rules.encoder.atomic_numbers)
        molecule = int(np.searchsorted(molecules.offsets, np.flatnonzero(~known)[0], side="right") - 1)
        hint = "evaluate with dataset 'drugs'" if rules.dataset == "qm9" else "remove the molecule"
        raise ValueError(f"{source}: molecule {molecule}: {error}; {hint}") from error


def pairs_within_groups(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i, j), i < j, with i and j in the same group [offsets[g], offsets[g+1]); sorted by (i, j)."""
    sizes = np.diff(offsets)
    group_end = np.repeat(offsets[1:], sizes)
    first_of_pair = np.arange(offsets[0], offsets[-1])
    partners = group_end - first_of_pair - 1
    first = np.repeat(first_of_pair, partners)
    rank = np.arange(len(first)) - np.repeat(np.cumsum(partners) - partners, partners)
    return first, first + 1 + rank


def infer_bonds(types: np.ndarray, positions: np.ndarray, offsets: np.ndarray, rules: BondRules) -> Bonds:
    """EDM bond orders of every atom pair within each molecule (atoms of molecule m: offsets[m]:offsets[m+1])."""
    pairs_per_molecule = np.diff(offsets) * (np.diff(offsets) - 1) // 2
    chunk_ends = np.searchsorted(np.cumsum(pairs_per_molecule), np.arange(1, len(offsets)) * PAIRS_PER_CHUNK)
    boundaries = np.unique(np.concatenate([[0], np.minimum(chunk_ends, len(offsets) - 1), [len(offsets) - 1]]))
    chunks = []
    for start, stop in zip(boundaries[:-1], boundaries[1:], strict=True):
        first, second = pairs_within_groups(offsets[start : stop + 1])
        delta = positions[first].astype(np.float64) - positions[second]
        distance_pm = 100.0 * np.sqrt((delta * delta).sum(axis=1))
        order = (distance_pm < rules.thresholds_pm[:, types[first], types[second]]).sum(axis=0, dtype=np.int8)
        bonded = order > 0
        chunks.append((first[bonded], second[bonded], order[bonded]))
    return Bonds(*(np.concatenate([chunk[k] for chunk in chunks]) for k in range(3)))


def atom_valences(bonds: Bonds, num_atoms: int) -> np.ndarray:
    """Summed bond order of every atom."""
    weights = bonds.order.astype(np.float64)
    valence = np.bincount(bonds.first, weights, num_atoms) + np.bincount(bonds.second, weights, num_atoms)
    return valence.astype(np.int64)


def stable_atoms(types: np.ndarray, valences: np.ndarray, rules: BondRules) -> np.ndarray:
    """Boolean per atom: its summed bond order is one of the valences EDM allows for its element."""
    return rules.allowed_valence[types, np.minimum(valences, MAX_VALENCE)]


def molecule_bonds(atomic_numbers: np.ndarray, positions: np.ndarray, rules: BondRules) -> Bonds:
    """EDM bonds of one molecule, with atom indices local to it."""
    types = rules.encoder.encode(np.asarray(atomic_numbers, dtype=np.int64))
    return infer_bonds(types, np.asarray(positions), np.array([0, len(types)]), rules)

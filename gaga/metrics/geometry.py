"""Samples of molecular structure that distribution metrics compare: atom counts, types, bond lengths and angles.

Bonds are EDM's inferred bonds; lengths are grouped by bond type ("C-H", "C=O", "C#N"), angles by centre element.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaga.data.elements import AtomEncoder
from gaga.metrics.bonds import Bonds, pairs_within_groups

BOND_SYMBOLS = {1: "-", 2: "=", 3: "#"}


def element_rank(symbol: str) -> tuple[int, str]:
    """Sort key for bond names: carbon first, hydrogen last, the other elements alphabetically between."""
    return ({"C": 0, "H": 2}.get(symbol, 1), symbol)


def bond_key(symbol_a: str, symbol_b: str, order: int) -> str:
    """Bond type name such as "C-H", "O-H", "C=O" or "C#N" (see `element_rank`)."""
    first, second = sorted((symbol_a, symbol_b), key=element_rank)
    return f"{first}{BOND_SYMBOLS[order]}{second}"


@dataclass(frozen=True)
class GeometrySamples:
    """What distribution metrics compare: atoms per molecule, atoms per type, bond lengths (Angstrom) by bond
    type, bond angles (degrees, between two bonds of one atom) by the centre atom's element, and the number of
    connected pieces (fragments) of each molecule's bond graph."""

    encoder: AtomEncoder
    num_atoms: np.ndarray
    type_counts: np.ndarray
    bond_lengths: dict[str, np.ndarray]
    bond_angles: dict[str, np.ndarray]
    fragments: np.ndarray


def geometry_from_bonds(
    encoder: AtomEncoder, types: np.ndarray, positions: np.ndarray, offsets: np.ndarray, bonds: Bonds
) -> GeometrySamples:
    """Structure samples of molecules given their atom type indices, positions, atom offsets and inferred bonds."""
    positions = np.asarray(positions, dtype=np.float64)
    num_types = encoder.num_types
    lengths = np.linalg.norm(positions[bonds.first] - positions[bonds.second], axis=1)
    low = np.minimum(types[bonds.first], types[bonds.second])
    high = np.maximum(types[bonds.first], types[bonds.second])
    bond_codes = (low * num_types + high) * 4 + bonds.order
    by_bond_type = {
        bond_key(encoder.symbols[code // 4 // num_types], encoder.symbols[code // 4 % num_types], code % 4): values
        for code, values in _group(bond_codes, lengths).items()
    }

    centre = np.concatenate([bonds.first, bonds.second])  # every bond seen from both of its atoms
    neighbour = np.concatenate([bonds.second, bonds.first])
    by_centre = np.argsort(centre, kind="stable")
    centre, neighbour = centre[by_centre], neighbour[by_centre]
    group_offsets = np.concatenate([[0], np.cumsum(np.bincount(centre, minlength=len(types)))])
    arm_a, arm_b = pairs_within_groups(group_offsets)
    vector_a = positions[neighbour[arm_a]] - positions[centre[arm_a]]
    vector_b = positions[neighbour[arm_b]] - positions[centre[arm_b]]
    norms = np.linalg.norm(vector_a, axis=1) * np.linalg.norm(vector_b, axis=1)
    defined = norms > 0  # an angle needs three distinct positions
    cosine = (vector_a[defined] * vector_b[defined]).sum(axis=1) / norms[defined]
    angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    angle_centres = types[centre[arm_a[defined]]]
    by_centre_type = {encoder.symbols[t]: values for t, values in _group(angle_centres, angles).items()}

    return GeometrySamples(
        encoder=encoder,
        num_atoms=np.diff(offsets),
        type_counts=np.bincount(types, minlength=num_types),
        bond_lengths=by_bond_type,
        bond_angles=by_centre_type,
        fragments=fragments_per_molecule(offsets, bonds),
    )


def fragments_per_molecule(offsets: np.ndarray, bonds: Bonds) -> np.ndarray:
    """Number of connected pieces of each molecule's bond graph (atoms of molecule m: offsets[m]:offsets[m+1])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    num_atoms = int(offsets[-1])
    graph = coo_matrix((np.ones(len(bonds.first)), (bonds.first, bonds.second)), shape=(num_atoms, num_atoms))
    _, labels = connected_components(graph, directed=False)
    _, first_atom_of_piece = np.unique(labels, return_index=True)
    molecule_of_piece = np.searchsorted(offsets, first_atom_of_piece, side="right") - 1
    return np.bincount(molecule_of_piece, minlength=len(offsets) - 1)


def _group(keys: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    """Values split by integer key."""
    if keys.size == 0:
        return {}
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    return {int(key): chunk for key, chunk in zip(unique.tolist(), np.split(values[order], starts[1:]), strict=True)}

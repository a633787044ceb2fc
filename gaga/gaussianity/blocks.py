"""Molecule data as GAGA sees it: per-molecule zero-meaned, normalised blocks in flat arrays plus offsets.

A block is an [n_atoms, width] float array (e.g. "positions" [n_atoms, 3], "features" [n_atoms, K]);
rows offsets[i]:offsets[i+1] belong to molecule i. SizeGroups turns the flat layout into dense per-size arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaga.diffusion.forward import EDM_NORM_VALUES

POSITIONS = "positions"
FEATURES = "features"


def per_molecule_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of the rows of each molecule ([n_molecules, ...]; 0 for a molecule without atoms)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    sums = np.zeros((len(offsets) - 1,) + values.shape[1:], dtype=np.float64)
    filled = np.diff(offsets) > 0
    if filled.any():
        sums[filled] = np.add.reduceat(values, offsets[:-1][filled], axis=0)
    return sums


def center_per_molecule(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`values` [n_atoms, width] minus each molecule's own column means (float64)."""
    values = np.asarray(values, dtype=np.float64)
    counts = np.diff(offsets)
    means = per_molecule_sums(values, offsets) / np.maximum(counts, 1)[:, None]
    return values - np.repeat(means, counts, axis=0)


def molecule_blocks(molecules, encoder, normalize_factors=EDM_NORM_VALUES[:2], center_features: bool = True):
    """(blocks, offsets) of a MoleculeSet: zero-CoM positions / factor[0], one-hot types (zero-meaned) / factor[1].

    The reference code's preprocessing, in numpy and float64, for data statistics and benchmarks on raw
    molecules (EDM's normalize_factors, charges unused); the one-hot is zero-meaned per molecule unless
    `center_features` is False. Training asks the model instead (`DiffusionBackbone.gaussianity_data`).
    """
    offsets = np.asarray(molecules.offsets, dtype=np.int64)
    positions = center_per_molecule(molecules.positions, offsets) / float(normalize_factors[0])
    one_hot = np.eye(encoder.num_types)[encoder.encode(molecules.atomic_numbers)]
    if center_features:
        one_hot = center_per_molecule(one_hot, offsets)
    return {POSITIONS: positions, FEATURES: one_hot / float(normalize_factors[1])}, offsets


def validate_blocks(
    blocks: dict[str, np.ndarray], offsets: np.ndarray, zero_com_blocks=(POSITIONS,), source: str = "blocks"
) -> None:
    """ValueError naming `source`, the block and the fix when blocks and offsets do not describe one dataset."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise ValueError(f"{source}: offsets must be non-decreasing, start at 0 and hold >= 2 entries")
    if not blocks:
        raise ValueError(f"{source}: no blocks; pass e.g. {{'{POSITIONS}': xyz, '{FEATURES}': one_hot}}")
    for name, values in blocks.items():
        if values.ndim != 2 or len(values) != offsets[-1]:
            raise ValueError(
                f"{source}: block '{name}' has shape {values.shape}, expected [{offsets[-1]}, width] "
                "(one row per atom, offsets[-1] atoms)"
            )
        if not np.isfinite(values).all():
            raise ValueError(f"{source}: block '{name}' has NaN or infinite entries; clean the data first")
    counts = np.diff(offsets)
    if (counts == 0).any():
        raise ValueError(f"{source}: molecule {int(np.argmin(counts))} has no atoms; drop empty molecules first")
    for name in zero_com_blocks:
        if name not in blocks:
            raise ValueError(f"{source}: zero-CoM block '{name}' is missing; blocks are {sorted(blocks)}")
        scale = max(1.0, float(np.abs(blocks[name]).max()))
        if np.abs(per_molecule_sums(blocks[name], offsets) / counts[:, None]).max() > 1e-6 * scale:
            raise ValueError(
                f"{source}: block '{name}' is not zero-mean per molecule; "
                "apply center_per_molecule(values, offsets) first"
            )


@dataclass(frozen=True)
class SizeGroups:
    """Molecules grouped by atom count: `rows[n]` is the [molecules, n] matrix of atom rows of the n-atom ones."""

    molecules: dict[int, np.ndarray]
    rows: dict[int, np.ndarray]

    @classmethod
    def from_offsets(cls, offsets: np.ndarray, molecule_ids: np.ndarray | None = None) -> SizeGroups:
        """Groups of `molecule_ids` (default: all molecules), in increasing atom count."""
        offsets = np.asarray(offsets, dtype=np.int64)
        ids = np.arange(len(offsets) - 1) if molecule_ids is None else np.asarray(molecule_ids, dtype=np.int64)
        counts = offsets[ids + 1] - offsets[ids]
        molecules, rows = {}, {}
        for n in np.unique(counts):
            members = ids[counts == n]
            molecules[int(n)] = members
            rows[int(n)] = offsets[members][:, None] + np.arange(n)
        return cls(molecules, rows)

    def gather(self, block: np.ndarray, n: int, members: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Dense [molecules, n, width] float64 copy of `block` for the n-atom group (optionally a subset)."""
        return np.asarray(block[self.rows[n][members]], dtype=np.float64)

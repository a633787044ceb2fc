"""Training-split statistics: p(N) for sampling, atom-type frequencies and GAGA's per-molecule moments.

Computed once per (dataset, split, remove_h) and cached as JSON beside the data cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gaga.atomic_files import write_text_atomically
from gaga.data.elements import AtomEncoder
from gaga.data.molecules import MoleculeSet

STATS_VERSION = 1


def per_molecule_moments(molecules: MoleculeSet, encoder: AtomEncoder, onehot_scale: float = 4.0) -> dict[str, float]:
    """GAGA's data moments (ANCHORS.md), each averaged over molecules.

    Per molecule the coordinates and the one-hot atom types are zero-meaned over its atoms and the
    one-hot divided by `onehot_scale`. `rms_*` is the root mean square of the entries of a block
    (the reference code's "variance", really a standard deviation); `var_*` is the unbiased
    variance of the flattened block (the paper's v_i with d = entries of the block).
    """
    counts = molecules.num_atoms
    starts = molecules.offsets[:-1]
    onehot = np.eye(encoder.num_types, dtype=np.float64)[encoder.encode(molecules.atomic_numbers)] / onehot_scale
    blocks = {"coords": molecules.positions.astype(np.float64), "types": onehot}
    sums_sq, sizes = {}, {}
    moments = {}
    for name, block in blocks.items():
        centred = block - np.repeat(np.add.reduceat(block, starts) / counts[:, None], counts, axis=0)
        sums_sq[name] = np.add.reduceat((centred**2).sum(axis=1), starts)
        flat = np.add.reduceat(centred.sum(axis=1), starts)  # sum of entries, for the flattened-block mean
        sizes[name] = counts * block.shape[1]
        moments[f"rms_{name}"] = float(np.sqrt(sums_sq[name] / sizes[name]).mean())
        dof = np.maximum(sizes[name] - 1, 1)
        moments[f"var_{name}"] = float(((sums_sq[name] - flat**2 / sizes[name]) / dof).mean())
    total_sq = sums_sq["coords"] + sums_sq["types"]
    moments["rms_all"] = float(np.sqrt(total_sq / (sizes["coords"] + sizes["types"])).mean())
    return moments


@dataclass
class DatasetStatistics:
    """What sampling and evaluation need to know about the training split."""

    dataset: str
    num_molecules: int
    atom_symbols: list[str]
    num_atoms_hist: dict[int, int]
    atom_type_counts: list[int]
    moments: dict[str, float]
    version: int = STATS_VERSION

    @classmethod
    def compute(cls, dataset: str, molecules: MoleculeSet, encoder: AtomEncoder) -> DatasetStatistics:
        sizes, size_counts = np.unique(molecules.num_atoms, return_counts=True)
        types = np.bincount(encoder.encode(molecules.atomic_numbers), minlength=encoder.num_types)
        return cls(
            dataset=dataset,
            num_molecules=len(molecules),
            atom_symbols=list(encoder.symbols),
            num_atoms_hist={int(n): int(c) for n, c in zip(sizes, size_counts, strict=True)},
            atom_type_counts=[int(c) for c in types],
            moments=per_molecule_moments(molecules, encoder),
        )

    @property
    def atom_type_frequencies(self) -> dict[str, float]:
        total = sum(self.atom_type_counts)
        return {s: c / total for s, c in zip(self.atom_symbols, self.atom_type_counts, strict=True)}

    @property
    def max_num_atoms(self) -> int:
        return max(self.num_atoms_hist)

    def save(self, path: str | Path) -> None:
        """Atomic JSON write."""
        write_text_atomically(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> DatasetStatistics | None:
        """The cached statistics, or None when missing, unreadable or from another version."""
        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("version") != STATS_VERSION:
                return None
            raw["num_atoms_hist"] = {int(k): int(v) for k, v in raw["num_atoms_hist"].items()}
            return cls(**raw)
        except (OSError, ValueError, TypeError):
            return None

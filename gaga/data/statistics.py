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


def per_molecule_moments(molecules: MoleculeSet, encoder: AtomEncoder) -> dict[str, float]:
    """GAGA's data moments (docs/references.md) with the estimators of gaga.gaussianity, each averaged over molecules.

    Coordinates and one-hot / 4 zero-meaned per molecule. `rms_*`: the reference code's mean root mean square
    (a standard deviation); `var_*`: the paper's unbiased per-molecule variance.
    """
    from gaga.gaussianity import FEATURES, POSITIONS, estimate_variance, molecule_blocks

    blocks, offsets = molecule_blocks(molecules, encoder)
    rms = estimate_variance(blocks, offsets, "reference_rms", per_component=True).data
    unbiased = estimate_variance(blocks, offsets, "unbiased", per_component=True).data
    pooled = estimate_variance(blocks, offsets, "reference_rms", per_component=False).data
    return {
        "rms_coords": float(rms[POSITIONS]),
        "rms_types": float(rms[FEATURES]),
        "rms_all": float(next(iter(pooled.values()))),
        "var_coords": float(unbiased[POSITIONS]),
        "var_types": float(unbiased[FEATURES]),
    }


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

    def model_description(self) -> dict:
        """What a backbone is told about its data (its `dataset` argument, stored in checkpoints): the dataset's name,
        atom symbols and p(N) as a histogram."""
        return {"name": self.dataset, "atom_symbols": self.atom_symbols, "num_atoms_hist": self.num_atoms_hist}

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

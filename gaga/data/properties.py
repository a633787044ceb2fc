"""Molecular properties for conditional generation, as EDM conditions on them.

- `QM9_PROPERTIES`: the six properties of EDM's conditional table, each a qm9pack CSV column and its conversion to
  EDM's units (HOMO, LUMO and gap: Hartree x 27.2114, EDM's `qm9_to_eV`, x 1000 for meV, the unit of its table).
- `edm_halves`: EDM's cut of the 100,000 training molecules into two halves of 50,000 (`qm9_first_half`, on which
  the property predictor trains, and `qm9_second_half`, on which the conditional generator trains).
- `PropertyNorms`: EDM's normalisation of a property, (value - mean) / mean absolute deviation.
- `PropertyGivenSize`: EDM's `DistributionProperty`, the property's histogram per atom count (1,000 equal bins
  between that count's smallest and largest value), from which conditional sampling draws (N, property) pairs.

Everything here is stored in checkpoints as plain data (`record` / `from_record`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

HARTREE_TO_MEV = 27.2114 * 1000  # EDM's qm9_to_eV factor, in meV as its conditional table reports
EDM_HALVES_SEED = 42  # EDM's qm9/data/utils.py: np.random.seed(42); np.random.permutation(num_train)
HISTOGRAM_BINS = 1000  # EDM's DistributionProperty


@dataclass(frozen=True)
class Property:
    """One property: the qm9pack CSV column holding it, and its unit after conversion (value x `factor`)."""

    column: str
    unit: str
    factor: float = 1.0


QM9_PROPERTIES = {
    "alpha": Property("Polarizability_bohr3", "Bohr^3"),
    "gap": Property("HOMO_LUMO_gap_au", "meV", HARTREE_TO_MEV),
    "homo": Property("HOMO_au", "meV", HARTREE_TO_MEV),
    "lumo": Property("LUMO_au", "meV", HARTREE_TO_MEV),
    "mu": Property("Dipole_debye", "D"),
    "Cv": Property("Heatcapacity_Cv_cal_mol_K", "cal/(mol K)"),
}


def check_conditioning(names: Sequence[str], available: dict[str, Property], dataset: str) -> tuple[str, ...]:
    """The property names as a tuple; ValueError naming the choices when one is not a property of `dataset`."""
    names = tuple(str(name) for name in names)
    if not available and names:
        raise ValueError(
            f"data.conditioning={list(names)}: the {dataset} data carries no molecular properties; condition on QM9 "
            f"(data=qm9), whose properties are {list(QM9_PROPERTIES)}, or set data.conditioning=[]"
        )
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"data.conditioning: {unknown[0]!r} is not a property of {dataset}; choose from {list(available)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"data.conditioning={list(names)} names a property twice")
    return names


def edm_halves(num_train: int) -> dict[str, np.ndarray]:
    """Positions in the training split of EDM's two halves: a permutation seeded 42, first half and the rest."""
    order = np.random.RandomState(EDM_HALVES_SEED).permutation(num_train)
    return {"first": order[: num_train // 2], "second": order[num_train // 2 :]}


@dataclass(frozen=True)
class PropertyNorms:
    """(value - mean) / MAD per property, with the mean and mean absolute deviation of one split (EDM's)."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    mad: tuple[float, ...]

    @classmethod
    def fit(cls, names: Sequence[str], values: np.ndarray) -> PropertyNorms:
        """From the values [M, k] of `names` over a split's molecules."""
        values = np.asarray(values, dtype=np.float64).reshape(len(values), len(names))
        mean = values.mean(axis=0)
        mad = np.abs(values - mean).mean(axis=0)
        if (mad <= 0).any():
            constant = names[int(np.flatnonzero(mad <= 0)[0])]
            raise ValueError(f"property {constant!r} is constant over the split; it cannot be normalised")
        return cls(tuple(names), tuple(float(m) for m in mean), tuple(float(d) for d in mad))

    def normalise(self, values: torch.Tensor) -> torch.Tensor:
        """Values [B, k] in the properties' units -> normalised."""
        mean, mad = (values.new_tensor(v) for v in (self.mean, self.mad))
        return (values - mean) / mad

    def denormalise(self, normalised: torch.Tensor) -> torch.Tensor:
        mean, mad = (normalised.new_tensor(v) for v in (self.mean, self.mad))
        return normalised * mad + mean

    def record(self) -> dict:
        return {"names": list(self.names), "mean": list(self.mean), "mad": list(self.mad)}

    @classmethod
    def from_record(cls, record: dict) -> PropertyNorms:
        return cls(tuple(record["names"]), tuple(record["mean"]), tuple(record["mad"]))


@dataclass(frozen=True)
class PropertyGivenSize:
    """EDM's DistributionProperty: per property and atom count N, a histogram of `HISTOGRAM_BINS` equal bins over
    [min, max] of that N's values; a draw picks a bin by its count and a value uniformly inside it.

    `histograms[name][N] = (low, high, counts)`. Properties are drawn independently of each other, as in EDM.
    """

    histograms: dict[str, dict[int, tuple[float, float, list[int]]]]

    @classmethod
    def fit(cls, names: Sequence[str], num_atoms: np.ndarray, values: np.ndarray) -> PropertyGivenSize:
        values = np.asarray(values, dtype=np.float64).reshape(len(num_atoms), len(names))
        histograms = {}
        for column, name in enumerate(names):
            histograms[name] = {}
            for size in np.unique(num_atoms):
                chosen = values[num_atoms == size, column]
                low, high = float(chosen.min()), float(chosen.max())
                bins = ((chosen - low) / (high - low + 1e-12) * HISTOGRAM_BINS).astype(np.int64)
                counts = np.bincount(np.minimum(bins, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
                histograms[name][int(size)] = (low, high, counts.tolist())
        return cls(histograms)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.histograms)

    def sizes(self) -> list[int]:
        """Atom counts with a histogram for every property."""
        return sorted(set.intersection(*(set(by_size) for by_size in self.histograms.values())))

    def sample(self, num_atoms: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Property values [B, k] (the properties' units) for molecules of sizes `num_atoms` [B]."""
        unknown = sorted(set(num_atoms.tolist()) - set(self.sizes()))
        if unknown:
            raise ValueError(
                f"no training molecule has {unknown[0]} atoms, so no property value can be drawn for that size; "
                f"sizes with values: {self.sizes()[0]}..{self.sizes()[-1]}"
            )
        values = torch.empty(len(num_atoms), len(self.histograms), dtype=torch.float64)
        for column, by_size in enumerate(self.histograms.values()):
            for size in num_atoms.unique().tolist():
                rows = torch.nonzero(num_atoms.cpu() == size).flatten()
                low, high, counts = by_size[size]
                picks = torch.multinomial(
                    torch.tensor(counts, dtype=torch.float64), len(rows), True, generator=generator
                )
                within = torch.rand(len(rows), dtype=torch.float64, generator=generator)
                values[rows, column] = low + (picks + within) / HISTOGRAM_BINS * (high - low)
        return values.float()

    def record(self) -> dict:
        return {
            name: {int(n): [lo, hi, list(c)] for n, (lo, hi, c) in by.items()} for name, by in self.histograms.items()
        }

    @classmethod
    def from_record(cls, record: dict) -> PropertyGivenSize:
        return cls(
            {
                name: {int(n): (float(v[0]), float(v[1]), list(v[2])) for n, v in by.items()}
                for name, by in record.items()
            }
        )

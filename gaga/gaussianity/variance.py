"""Dataset variance v_hat of zero-meaned molecule blocks: the paper's, the maximum-likelihood and the reference's;
per-column mean and variance of blocks that keep their mean (`with_column_moments`, gaga.features=kept).

Each estimate also holds `noise`, the estimator's own value on unit forward noise (see VarianceEstimate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from gaga.gaussianity.blocks import POSITIONS, per_molecule_sums

ESTIMATORS = ("unbiased", "ml", "reference_rms")
POOLED = "all"


@dataclass(frozen=True)
class VarianceEstimate:
    """v_hat per component ("all" when pooled) and the estimator's value on unit forward noise (`noise`).

    estimator: "unbiased" (paper: per-molecule sum of squared deviations from the molecule's scalar mean over
    d - 1, d = entries of the molecule's block, averaged over molecules), "ml" (maximum-likelihood second moment:
    sum of squares over the number of entries, pooled over the dataset) or "reference_rms" (QuJX/GAGA: mean over
    molecules of the root mean square, a standard deviation that the reference uses as a variance; its `noise`
    is 1 by that code's convention v_t = alpha_t^2 v + sigma_t^2).
    `noise` is the estimator's expectation on unit forward noise (zero-CoM projected for zero-CoM blocks), so
    that v_t = alpha_bar_t v_hat + (1 - alpha_bar_t) noise is exactly what the estimator sees on x_t.
    `mean` holds, for blocks that keep their mean (not zero-meaned per molecule), the data's mean per column over
    atoms; their `data` entry is then the per-column variance about it and the closed form's mean at step t is
    sqrt(alpha_bar_t) mean. Blocks absent from `mean` have mean 0.
    """

    estimator: str
    per_component: bool
    data: dict[str, float | list[float]]
    noise: dict[str, float]
    mean: dict[str, list[float]] = field(default_factory=dict)

    def component(self, block: str) -> str:
        """The key of `data` / `noise` that applies to `block`."""
        return block if self.per_component else POOLED

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> VarianceEstimate:
        return cls(
            record["estimator"],
            bool(record["per_component"]),
            dict(record["data"]),
            dict(record["noise"]),
            dict(record.get("mean", {})),
        )

    def start_v_hat(self, block: str) -> float | list[float]:
        """v_hat of `block` in units of the noise (per column for a block that keeps its mean)."""
        component = self.component(block)
        value = np.asarray(self.data[component], dtype=np.float64) / self.noise[component]
        return value.tolist() if value.ndim else float(value)


def _estimate(values: np.ndarray, offsets: np.ndarray, zero_com_columns: int, estimator: str) -> tuple[float, float]:
    """(v_hat, noise expectation) of an [n_atoms, F] block whose first `zero_com_columns` columns get zero-CoM noise."""
    counts = np.diff(offsets).astype(np.float64)
    keep = counts > 0
    width = values.shape[1]
    sums = per_molecule_sums(values.sum(axis=1), offsets)[keep]
    squares = per_molecule_sums((values**2).sum(axis=1), offsets)[keep]
    counts = counts[keep]
    entries = counts * width
    free_columns = width - zero_com_columns
    if estimator == "unbiased":
        use = entries > 1
        deviations = squares[use] - sums[use] ** 2 / entries[use]
        n = counts[use]
        noise = (zero_com_columns * (n - 1) + free_columns * (n - 1.0 / width)) / (entries[use] - 1)
        return float(np.mean(deviations / (entries[use] - 1))), float(np.mean(noise))
    if estimator == "ml":
        noise = (zero_com_columns * (counts - 1) + free_columns * counts).sum() / entries.sum()
        return float(squares.sum() / entries.sum()), float(noise)
    if estimator == "reference_rms":
        return float(np.mean(np.sqrt(squares / entries))), 1.0
    raise ValueError(f"unknown variance estimator {estimator!r}; use one of {ESTIMATORS}")


def estimate_variance(
    blocks: dict[str, np.ndarray],
    offsets: np.ndarray,
    estimator: str = "unbiased",
    per_component: bool = True,
    zero_com_blocks=(POSITIONS,),
) -> VarianceEstimate:
    """v_hat of zero-meaned blocks, per component or pooled over all columns (the paper's scalar)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown variance estimator {estimator!r}; use one of {ESTIMATORS}")
    offsets = np.asarray(offsets, dtype=np.int64)
    if per_component:
        parts = {name: (values, values.shape[1] if name in zero_com_blocks else 0) for name, values in blocks.items()}
    else:
        order = sorted(blocks, key=lambda name: name not in zero_com_blocks)  # zero-CoM columns first
        pooled = np.concatenate([blocks[name] for name in order], axis=1)
        parts = {POOLED: (pooled, sum(blocks[name].shape[1] for name in blocks if name in zero_com_blocks))}
    data, noise = {}, {}
    for name, (values, zero_com_columns) in parts.items():
        data[name], noise[name] = _estimate(np.asarray(values, dtype=np.float64), offsets, zero_com_columns, estimator)
    return VarianceEstimate(estimator, per_component, data, noise)


def with_column_moments(estimate: VarianceEstimate, kept: dict[str, np.ndarray]) -> VarianceEstimate:
    """`estimate` plus blocks that keep their mean: per column, the mean and (maximum-likelihood) variance over all
    atoms, with unit unprojected noise, so that column j of x_t is N(sqrt(alpha_bar_t) m_j,
    alpha_bar_t v_j + 1 - alpha_bar_t) in the marginal over atoms."""
    if not estimate.per_component:
        raise ValueError("blocks that keep their mean need a per-component estimate (gaga.variance=exact)")
    data, noise, mean = dict(estimate.data), dict(estimate.noise), dict(estimate.mean)
    for name, values in kept.items():
        values = np.asarray(values, dtype=np.float64)
        mean[name] = values.mean(axis=0).tolist()
        data[name] = values.var(axis=0).tolist()
        noise[name] = 1.0
    return replace(estimate, data=data, noise=noise, mean=mean)


def centre_kept_blocks(blocks: dict[str, np.ndarray], estimate: VarianceEstimate) -> dict[str, np.ndarray]:
    """Blocks with the data's column mean subtracted where `estimate` has one: x_t - sqrt(alpha_bar_t) m is then
    zero-mean, so every test of x_t against N(sqrt(alpha_bar_t) m, v_t) is the same test against N(0, v_t)."""
    return {
        name: values - np.asarray(estimate.mean[name]) if name in estimate.mean else values
        for name, values in blocks.items()
    }

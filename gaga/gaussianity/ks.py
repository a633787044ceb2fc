"""One-sample Kolmogorov-Smirnov statistics against a normal law, vectorised along the last axis.

Equal to scipy.stats.kstest(x, "norm", args=(loc, scale)) statistic and exact two-sided p-value, without
scipy's per-call cost: pass/fail at level alpha compares D with the critical value, exact p only near it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.special import ndtr
from scipy.stats import kstwo

BOUNDARY_TOLERANCE = 1e-9


def ks_statistic(samples: np.ndarray, loc=0.0, scale=1.0) -> np.ndarray:
    """Two-sided KS distance sup |F_n - Phi((x - loc) / scale)| of each row (last axis) of `samples`."""
    values = np.sort((np.asarray(samples, dtype=np.float64) - loc) / scale, axis=-1)
    n = values.shape[-1]
    cdf = ndtr(values)
    above = (np.arange(1.0, n + 1) / n - cdf).max(axis=-1)
    below = (cdf - np.arange(0.0, n) / n).max(axis=-1)
    return np.maximum(above, below)


def ks_pvalue(statistic, n: int) -> np.ndarray:
    """Exact two-sided p-value of KS statistics from n samples (scipy's kstwo, as kstest's default method)."""
    return np.clip(kstwo.sf(statistic, n), 0.0, 1.0)


@cache
def ks_critical_value(n: int, alpha: float) -> float:
    """The D at which the exact two-sided p-value of n samples equals alpha."""
    return float(kstwo.isf(alpha, n))


def ks_passes(statistic: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """p-value > alpha for each statistic, decided exactly (p is computed only within 1e-9 of the critical D)."""
    statistic = np.asarray(statistic, dtype=np.float64)
    critical = ks_critical_value(int(n), float(alpha))
    passes = statistic < critical
    near = np.abs(statistic - critical) <= BOUNDARY_TOLERANCE * critical
    if near.any():
        passes[near] = ks_pvalue(statistic[near], n) > alpha
    return passes

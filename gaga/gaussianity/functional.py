"""The Gaussianity functional of Proposition 3.1: H^(K)(x) = beta ||offdiag Cov(x)||_F + sum_k w_k ||C^(k)(x)||_F.

C^(k) is the k-th order joint cumulant tensor (k = 3, 4 here); functional_along_t follows it down the VP path.
"""

from __future__ import annotations

import numpy as np

MAX_ORDER = 4


def _checked_weights(order: int, weights) -> tuple[float, ...]:
    """w_3..w_K (all 1 when None), after checking K and the number of weights."""
    if not 2 <= order <= MAX_ORDER:
        raise ValueError(f"functional order K must be in 2..{MAX_ORDER}, got {order}")
    weights = (1.0,) * (order - 2) if weights is None else tuple(weights)
    if len(weights) != order - 2:
        raise ValueError(f"functional weights must hold one w_k per k = 3..{order}, got {len(weights)}")
    return weights


def cumulant_norms(samples: np.ndarray, order: int = 4) -> dict[int, float]:
    """Frobenius norms: key 2 -> off-diagonal covariance, k >= 3 -> C^(k), of samples [n, d] (rows are draws)."""
    x = np.asarray(samples, dtype=np.float64)
    x = x - x.mean(axis=0)
    n = len(x)
    covariance = x.T @ x / n
    norms = {2: float(np.linalg.norm(covariance - np.diag(np.diag(covariance))))}
    if order >= 3:
        norms[3] = float(np.linalg.norm(np.einsum("ni,nj,nk->ijk", x, x, x, optimize=True) / n))
    if order >= 4:
        moment = np.einsum("ni,nj,nk,nl->ijkl", x, x, x, x, optimize=True) / n
        c = covariance
        gaussian = np.einsum("ij,kl->ijkl", c, c) + np.einsum("ik,jl->ijkl", c, c) + np.einsum("il,jk->ijkl", c, c)
        norms[4] = float(np.linalg.norm(moment - gaussian))
    return norms


def gaussianity_functional(samples: np.ndarray, order: int = 4, beta: float = 1.0, weights=None) -> float:
    """H^(K) of samples [n, d]: 0 for an independent Gaussian, larger the further from one (weights None: all 1)."""
    weights = _checked_weights(order, weights)
    norms = cumulant_norms(samples, order)
    return beta * norms[2] + sum(w * norms[k] for k, w in zip(range(3, order + 1), weights, strict=True))


def functional_along_t(
    x0: np.ndarray, alpha_bar: np.ndarray, order: int = 4, beta: float = 1.0, weights=None
) -> np.ndarray:
    """H^(K)(x_t) for each alpha_bar_t, from the clean samples x0 [n, d] and the cumulant scaling laws.

    With x_t = alpha_t x_0 + sigma_t eps, eps Gaussian, independent of x_0 and uncorrelated across columns, the
    off-diagonal covariance scales by alpha_bar_t and C^(k) by alpha_t^k (Gaussians have no cumulant above 2).
    Zero-CoM noise is Gaussian per molecule; pooling sizes adds a scale mixture this ignores (order Var(1/N)).
    """
    weights = _checked_weights(order, weights)
    norms = cumulant_norms(x0, order)
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    value = beta * alpha_bar * norms[2]
    for k, w in zip(range(3, order + 1), weights, strict=True):
        value = value + w * alpha_bar ** (k / 2) * norms[k]
    return value

"""Kraskov (KSG, algorithm 1) k-NN mutual information, as sklearn's mutual_info_regression computes it.

Batched brute force serves many small samples (one molecule each), a KD-tree one large sample (a dataset);
on continuous data both equal sklearn's estimates to rounding (its 1e-10 jitter only breaks exact ties).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

CHUNK_ELEMENTS = 80_000  # distance-matrix entries per chunk: keeps the brute-force kernel in cache


def _scale(values: np.ndarray, axis: int) -> np.ndarray:
    """values / std along `axis` (ddof 0); near-constant variables are left unscaled, as sklearn's scale does."""
    std = values.std(axis=axis, keepdims=True)
    return values / np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)


def _ksg_value(n: int, k: int, mean_psi_x, mean_psi_y, clip: bool = True):
    """MI = psi(n) + psi(k) - <psi(n_x + 1)> - <psi(n_y + 1)>, clipped at 0 as sklearn does unless clip=False.

    Each variable is first divided by its std; r_i is the Chebyshev distance to the k-th neighbour in the joint
    space and n_x(i), n_y(i) count the other points strictly closer than r_i in each marginal.
    """
    value = digamma(n) + digamma(k) - mean_psi_x - mean_psi_y
    return np.maximum(value, 0.0) if clip else value


def _check_neighbours(n: int, k: int) -> None:
    if not 0 < k < n:
        raise ValueError(f"k-NN mutual information needs 0 < k < samples, got k={k} with {n} samples")


def _ksg_from_distances(dx: np.ndarray, dy: np.ndarray, k: int, joint: np.ndarray | None = None) -> np.ndarray:
    """MI of a batch from marginal distance matrices dx, dy [n, n, batch] (symmetric, zero diagonal).

    `joint` is an optional reusable buffer of the same shape (large fresh arrays cost page faults).
    """
    n = dx.shape[0]
    joint = np.maximum(dx, dy, out=joint)
    joint[np.arange(n), np.arange(n)] = np.inf
    minima = np.full((k,) + joint.shape[1:], np.inf, dtype=joint.dtype)
    spare = np.empty(joint.shape[1:], dtype=joint.dtype)
    for row in joint:  # running k smallest over neighbours j, vectorised over (i, batch)
        for level in range(k - 1, 0, -1):
            np.maximum(minima[level - 1], row, out=spare)
            np.minimum(minima[level], spare, out=minima[level])
        np.minimum(minima[0], row, out=minima[0])
    radius = np.nextafter(minima[k - 1], joint.dtype.type(0))
    count_type = np.uint8 if n < 256 else np.int64
    psi = digamma(np.arange(n + 1.0))
    within_x = np.add.reduce((dx <= radius).view(np.uint8), axis=0, dtype=count_type)  # includes the point itself
    within_y = np.add.reduce((dy <= radius).view(np.uint8), axis=0, dtype=count_type)
    return _ksg_value(n, k, psi[within_x].mean(axis=0), psi[within_y].mean(axis=0))


def _chunk_size(n: int) -> int:
    return max(1, CHUNK_ELEMENTS // (n * n))


def paired_mutual_information(x: np.ndarray, y: np.ndarray, k: int = 3, dtype=np.float64) -> np.ndarray:
    """MI between x[:, b] and y[:, b] for each b: samples along axis 0 ([n, batch], the fast layout).

    dtype=np.float32 compares distances in single precision, about twice as fast; against double precision that
    moves one neighbour count in about 1 of 10^5 estimates (by <= 0.01 nats at 18 samples).
    """
    n = x.shape[0]
    _check_neighbours(n, k)
    xs = _scale(np.asarray(x, dtype=np.float64), axis=0).astype(dtype)
    ys = _scale(np.asarray(y, dtype=np.float64), axis=0).astype(dtype)
    out = np.empty(xs.shape[1])
    step = _chunk_size(n)
    for start in range(0, xs.shape[1], step):
        cx, cy = xs[:, start : start + step], ys[:, start : start + step]
        out[start : start + step] = _ksg_from_distances(
            np.abs(cx[:, None] - cx[None]), np.abs(cy[:, None] - cy[None]), k
        )
    return out


def column_pair_mutual_information(samples: np.ndarray, pairs: np.ndarray, k: int = 3, dtype=np.float64) -> np.ndarray:
    """MI between columns a and b of each sample set: samples [batch, n, F], pairs [P, 2] -> [batch, P] (dtype as
    in paired_mutual_information)."""
    samples = np.asarray(samples, dtype=np.float64)
    batch, n, _ = samples.shape
    _check_neighbours(n, k)
    scaled = _scale(np.ascontiguousarray(samples.transpose(2, 1, 0)), axis=1).astype(dtype)  # [F, n, batch]
    out = np.empty((batch, len(pairs)))
    step = _chunk_size(n)
    for start in range(0, batch, step):
        chunk = scaled[:, :, start : start + step]
        distances = np.abs(chunk[:, :, None] - chunk[:, None])  # [F, n, n, chunk]
        joint = np.empty_like(distances[0])
        for p, (a, b) in enumerate(pairs):
            out[start : start + step, p] = _ksg_from_distances(distances[a], distances[b], k, joint)
    return out


def _count_within(values: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """#{j : |values[j] - values[i]| <= radius[i]} for each i, with the floating-point distances sklearn compares."""
    ordered = np.sort(values)
    n = len(ordered)
    hi = np.searchsorted(ordered, values + radius, side="right")
    lo = np.searchsorted(ordered, values - radius, side="left")
    while True:  # x + r and x - r round; move each end until it agrees with the rounded distances
        grow_hi = (hi < n) & (ordered[np.minimum(hi, n - 1)] - values <= radius)
        shrink_hi = (hi > 0) & (ordered[np.maximum(hi - 1, 0)] - values > radius)
        grow_lo = (lo > 0) & (values - ordered[np.maximum(lo - 1, 0)] <= radius)
        shrink_lo = (lo < n) & (values - ordered[np.minimum(lo, n - 1)] > radius)
        if not (grow_hi.any() or shrink_hi.any() or grow_lo.any() or shrink_lo.any()):
            return hi - lo
        hi = hi + grow_hi - shrink_hi
        lo = lo - grow_lo + shrink_lo


def ksg_mutual_information_large(
    x: np.ndarray, y: np.ndarray, k: int = 3, workers: int = 1, clip: bool = True
) -> float:
    """MI between two 1-D samples of any size (KD-tree neighbour search).

    clip=False keeps negative estimates: averages of unclipped estimates have no upward bias at independence.
    """
    x = _scale(np.asarray(x, dtype=np.float64).ravel(), axis=0)
    y = _scale(np.asarray(y, dtype=np.float64).ravel(), axis=0)
    _check_neighbours(len(x), k)
    distances, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=k + 1, p=np.inf, workers=workers)
    radius = np.nextafter(distances[:, -1], 0.0)  # column 0 is the point itself
    return float(
        _ksg_value(len(x), k, digamma(_count_within(x, radius)).mean(), digamma(_count_within(y, radius)).mean(), clip)
    )


@cache
def _reference_draws(n_columns: int, n_samples: int, n_pairs: int, seed: int) -> tuple[tuple[int, int], ...]:
    rng = np.random.RandomState(seed)
    drawn = []
    for _ in range(n_pairs):
        drawn.append(tuple(int(c) for c in rng.choice(n_columns, 2, replace=False)))
        rng.standard_normal(size=(n_samples, 1))  # sklearn's jitter of x ...
        rng.standard_normal(size=n_samples)  # ... and of y, drawn from the same global generator
    return tuple(drawn)


def reference_pairs(n_columns: int, n_samples: int, n_pairs: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(unordered column pairs [P, 2], times each is drawn) of QuJX/GAGA's random-pair MI score, exactly.

    That score seeds NumPy's global generator with `seed`, then per pair calls np.random.choice(F, 2,
    replace=False) and mutual_info_regression, whose tie-breaking jitter draws n_samples + n_samples normals
    from the same generator; replaying those draws reproduces its pairs for a block of this shape.
    """
    drawn = np.sort(np.array(_reference_draws(n_columns, n_samples, n_pairs, seed)), axis=1)
    pairs, counts = np.unique(drawn, axis=0, return_counts=True)
    return pairs, counts

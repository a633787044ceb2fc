"""The paper's dataset-level Gaussianity statistics D_t and Dep along t, and the search for their first step below eps.

DatasetSample defines both statistics precisely, including what a sample is for molecules of different sizes;
dependence_null measures Dep's noise floor (its value on pure forward noise of the same molecules).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from gaga.gaussianity.blocks import per_molecule_sums
from gaga.gaussianity.ks import ks_statistic
from gaga.gaussianity.mutual_info import ksg_mutual_information_large


class DatasetSample:
    """Sampled molecules (>= 2 atoms) of a dataset: clean blocks, one noise draw, and the atoms the MI uses.

    All steps t reuse one draw of forward noise, so the curves are smooth in t. Per block at step t:
    - D_t: KS distance between each column's empirical CDF over all sampled atoms and N(0, v_t), mean over columns.
    - Dep: mean of two KSG MI averages in which a sample is a molecule: (a) pairs of columns, values of one random
      atom per molecule; (b) pairs of atoms, one random pair of distinct atoms per molecule, MI between their
      values in the same column, averaged over columns. Blocks with one column use (b) only. Estimates are
      averaged unclipped and the average is clipped at 0 (clipping each leaves a positive floor at independence).
    """

    def __init__(
        self,
        blocks: dict[str, np.ndarray],
        offsets: np.ndarray,
        molecule_ids: np.ndarray,
        zero_com_blocks,
        max_column_pairs: int,
        rng: np.random.Generator,
    ):
        offsets = np.asarray(offsets, dtype=np.int64)
        counts = offsets[molecule_ids + 1] - offsets[molecule_ids]
        if (counts < 2).any():
            raise ValueError("dataset-mode Gaussianity needs molecules with >= 2 atoms; filter the molecule ids")
        rows = np.concatenate([np.arange(offsets[m], offsets[m + 1]) for m in molecule_ids])
        local = np.concatenate([[0], np.cumsum(counts)])
        self.x0 = {name: np.asarray(values[rows], dtype=np.float64) for name, values in blocks.items()}
        self.noise = {}
        for name, x0 in self.x0.items():
            eps = rng.standard_normal(x0.shape)
            if name in zero_com_blocks:
                eps -= np.repeat(per_molecule_sums(eps, local) / counts[:, None], counts, axis=0)
            self.noise[name] = eps
        self.single_atom = local[:-1] + rng.integers(0, counts)
        first = rng.integers(0, counts)
        second = (first + rng.integers(1, counts)) % counts  # a different atom of the same molecule
        self.atom_pairs = (local[:-1] + first, local[:-1] + second)
        self.column_pairs = {}
        for name, x0 in self.x0.items():
            pairs = list(combinations(range(x0.shape[1]), 2))
            keep = rng.permutation(len(pairs))[:max_column_pairs]
            self.column_pairs[name] = [pairs[i] for i in sorted(keep)]

    def noised(self, block: str, alpha_bar_t: float) -> np.ndarray:
        return np.sqrt(alpha_bar_t) * self.x0[block] + np.sqrt(1.0 - alpha_bar_t) * self.noise[block]

    def ks_distance(self, block: str, alpha_bar_t: float, variance_t) -> float:
        """D_t: mean over columns of the KS distance to N(0, v_t); v_t is one value or one per column."""
        scale = np.sqrt(np.asarray(variance_t, dtype=np.float64)).reshape(-1, 1)
        return float(ks_statistic(self.noised(block, alpha_bar_t).T, 0.0, scale).mean())

    def dependence(self, block: str, alpha_bar_t: float, k: int, workers: int = 1) -> float:
        """Dep: mean of the column-pair and atom-pair KSG MI averages (samples are molecules)."""
        z = self.noised(block, alpha_bar_t)
        first, second = self.atom_pairs
        atoms = np.mean(
            [ksg_mutual_information_large(z[first, c], z[second, c], k, workers, clip=False) for c in range(z.shape[1])]
        )
        if not self.column_pairs[block]:
            return max(float(atoms), 0.0)
        single = z[self.single_atom]
        columns = np.mean(
            [
                ksg_mutual_information_large(single[:, a], single[:, b], k, workers, clip=False)
                for a, b in self.column_pairs[block]
            ]
        )
        return max(float(atoms + columns) / 2, 0.0)


def first_below(evaluate, grid: np.ndarray, threshold: float, bisection: bool, rule: str = "first") -> int | None:
    """First t with the statistic <= threshold: on `grid`, then (bisection) refined to one step inside the bracket.

    rule "first": the first grid t whose value is <= threshold (the paper's literal rule). "stays": the first grid t
    from which every later grid value is <= threshold. "monotone": the first grid t at which the non-increasing
    least-squares (isotonic) fit of the grid values is <= threshold; a statistic that cannot grow with t (MI under
    added independent noise, by the data processing inequality) is estimated from all grid values at once, so one
    noisy dip or spike cannot decide. Bisection then applies the raw statistic between the grid neighbours.
    """
    values = np.array([evaluate(int(t)) for t in grid], dtype=np.float64)
    if rule == "monotone":
        from scipy.optimize import isotonic_regression

        values = isotonic_regression(values, increasing=False).x
    below = values <= threshold
    if rule in ("stays", "monotone"):
        failing = np.flatnonzero(~below)
        passing = [int(t) for t in grid[(failing[-1] + 1 if len(failing) else 0) :]]
    elif rule == "first":
        passing = [int(t) for t in grid[below]]
    else:
        raise ValueError(f"unknown T_ID rule {rule!r}; use first, stays or monotone")
    if not passing:
        return None
    high = int(passing[0])
    position = int(np.searchsorted(grid, high))
    if not bisection or position == 0:
        return high
    low = int(grid[position - 1])
    while high - low > 1:
        middle = (low + high) // 2
        if evaluate(middle) <= threshold:
            high = middle
        else:
            low = middle
    return high


def dependence_null(
    blocks: dict[str, np.ndarray],
    offsets: np.ndarray,
    molecule_ids: np.ndarray,
    zero_com_blocks,
    max_column_pairs: int,
    k: dict[str, int],
    draws: int,
    seed: int,
    workers: int = 1,
) -> dict[str, list[float]]:
    """Dep of pure forward noise (alpha_bar = 0) on the same molecules, `draws` independent draws per block.

    Independent data have MI 0, so these values are the estimator's null: its spread at this sample size, plus the
    dependence the zero-mean projection itself puts between atoms of one molecule (correlation -1/(N - 1)). KSG is
    invariant to scaling a column, so this is also the null of any x_t whose entries are independent Gaussians.
    """
    null = {name: [] for name in blocks}
    for draw in range(draws):
        rng = np.random.default_rng([seed, 7919, draw])
        sample = DatasetSample(blocks, offsets, molecule_ids, zero_com_blocks, max_column_pairs, rng)
        for name in blocks:
            null[name].append(sample.dependence(name, 0.0, k[name], workers))
    return null

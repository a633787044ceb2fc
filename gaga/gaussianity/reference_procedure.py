"""QuJX/GAGA's per-molecule Gaussianity procedure (Gaussianity_test.py + GAGA_step_estimation.py), vectorised.

Three tests per molecule, block and grid step (run_test); a molecule's T is its first double pass (MoleculeTask).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gaga.gaussianity.blocks import SizeGroups
from gaga.gaussianity.closed_form import block_alpha_bar
from gaga.gaussianity.ks import ks_passes, ks_statistic
from gaga.gaussianity.mutual_info import column_pair_mutual_information, paired_mutual_information, reference_pairs

TESTS = ("ks", "mi_atoms", "mi_columns")  # cheapest first
OVERALL = "overall"
NOT_REACHED = -1
MOLECULES_PER_TASK = 512


def criteria_of(blocks) -> dict[str, tuple[str, ...]]:
    """Criterion name -> its tests ("block:test"): block/ds = KS, block/id = both MI, block/star and overall = all."""
    criteria = {}
    for block in blocks:
        criteria[f"{block}/ds"] = (f"{block}:ks",)
        criteria[f"{block}/id"] = (f"{block}:mi_atoms", f"{block}:mi_columns")
        criteria[f"{block}/star"] = tuple(f"{block}:{test}" for test in TESTS)
    criteria[OVERALL] = tuple(f"{block}:{test}" for test in TESTS for block in blocks)
    return criteria


def run_test(
    test: str, z: np.ndarray, variance, k: int, alpha: float, mi_threshold: float, dtype=np.float64
) -> np.ndarray:
    """Pass flags of one test for a block z [molecules, N, F] of equal-size molecules, as the reference computes it.

    z is standardised with the expected variance (one value, or one per column [F]), then "ks": one-sample KS of
    the N*F entries against N(0, 1), pass p > alpha; "mi_columns": mean KSG MI over the reference's 2N seeded random
    column pairs (samples: the N atoms); "mi_atoms": the same on the transpose (pairs of atoms, samples: the F
    columns); MI passes below mi_threshold. `dtype` is the precision of the k-NN distance comparisons (see
    mutual_info).
    """
    molecules, n_atoms, width = z.shape
    standardised = z / np.sqrt(variance)
    if test == "ks":
        return ks_passes(ks_statistic(standardised.reshape(molecules, -1)), n_atoms * width, alpha)
    if test == "mi_columns":
        pairs, counts = reference_pairs(width, n_atoms, 2 * n_atoms)
        scores = column_pair_mutual_information(standardised, pairs, k, dtype) @ counts / counts.sum()
    elif test == "mi_atoms":
        pairs, counts = reference_pairs(n_atoms, width, 2 * n_atoms)
        by_atom = standardised.transpose(2, 1, 0)  # [F, N, molecules]: the F values of each atom are its samples
        first = by_atom[:, pairs[:, 0]].reshape(width, -1)
        second = by_atom[:, pairs[:, 1]].reshape(width, -1)
        mi = paired_mutual_information(first, second, k, dtype).reshape(len(pairs), molecules)
        scores = counts @ mi / counts.sum()
    else:
        raise ValueError(f"unknown per-molecule test {test!r}; use one of {TESTS}")
    return scores < mi_threshold


class PerMoleculePlan:
    """Everything a task needs: grid, alpha_t, sigma_t, per-block expected variance, k, thresholds, criteria."""

    def __init__(
        self, grid, alpha_bar, variance_by_block, k, alpha_level, mi_threshold, zero_com_blocks, dtype=np.float64
    ):
        self.grid = np.asarray(grid)
        # per block when alpha_bar is a dict block -> alpha_bar (a path whose blocks move at different rates)
        self.alpha, self.sigma = {}, {}
        for block in variance_by_block:
            alpha_bar_grid = np.asarray(block_alpha_bar(alpha_bar, block), dtype=np.float64)[self.grid]
            self.alpha[block], self.sigma[block] = np.sqrt(alpha_bar_grid), np.sqrt(1.0 - alpha_bar_grid)
        # per grid step: one value, or one per column for a block that keeps its mean
        self.variance = {
            block: np.broadcast_to(v, self.grid.shape + np.shape(v)[1:]) for block, v in variance_by_block.items()
        }
        self.k, self.alpha_level, self.mi_threshold = k, alpha_level, mi_threshold
        self.zero_com_blocks, self.dtype = tuple(zero_com_blocks), dtype
        self.criteria = criteria_of(variance_by_block)
        self.test_order = [f"{block}:{test}" for test in TESTS for block in variance_by_block]


def first_double_pass(passes: np.ndarray) -> np.ndarray:
    """Index of each row's first grid step that passes together with the next one, NOT_REACHED if none.

    passes [molecules, steps]; this is GAGA_step_estimation's rule (row i and row i + 1 both pass -> step i).
    """
    both = passes[:, :-1] & passes[:, 1:]
    if not both.shape[1]:
        return np.full(len(passes), NOT_REACHED)
    return np.where(both.any(axis=1), both.argmax(axis=1), NOT_REACHED)


class MoleculeTask:
    """The procedure on one chunk of equal-size molecules: noise per grid step, tests, first double passes.

    A criterion is a set of tests; a molecule's T is its first grid t at which the criterion passes at t and at the
    next step. Fresh noise is drawn per t, as the reference does. Tests run cheapest first and only where an
    undecided criterion still needs them, which leaves every criterion's T unchanged.
    """

    def __init__(self, x0: dict[str, np.ndarray], plan: PerMoleculePlan, seed: tuple[int, ...]):
        self.x0, self.plan, self.rng = x0, plan, np.random.default_rng(list(seed))
        self.size = len(next(iter(x0.values())))

    def noised_blocks(self, t_index: int) -> dict[str, np.ndarray]:
        """z_t of every molecule of the chunk at grid step t_index; call with t_index = 0, 1, ... in turn.

        Noise is drawn for all molecules (decided ones too), so the stream does not depend on test outcomes.
        """
        z = {}
        for block, x0 in self.x0.items():
            eps = self.rng.standard_normal(x0.shape, dtype=np.float32)
            if block in self.plan.zero_com_blocks:
                eps -= eps.mean(axis=1, keepdims=True)
            z[block] = self.plan.alpha[block][t_index] * x0 + self.plan.sigma[block][t_index] * eps
        return z

    def run(self) -> dict[str, np.ndarray]:
        """Grid index of each molecule's first double pass (or NOT_REACHED), per criterion."""
        plan = self.plan
        passes = {name: np.zeros((self.size, len(plan.grid)), bool) for name in plan.criteria}
        first = {name: np.full(self.size, NOT_REACHED) for name in plan.criteria}
        for t_index in range(len(plan.grid)):
            undecided = {name: index == NOT_REACHED for name, index in first.items()}
            active = np.flatnonzero(np.any(list(undecided.values()), axis=0))
            if not len(active):
                break
            z = self.noised_blocks(t_index)
            failed = {name: ~undecided[name] for name in plan.criteria}
            for test in plan.test_order:
                users = [name for name, tests in plan.criteria.items() if test in tests]
                need = active[~np.all([failed[name][active] for name in users], axis=0)]
                if len(need):
                    block, kind = test.split(":")
                    passed = run_test(
                        kind,
                        z[block][need],
                        plan.variance[block][t_index],
                        plan.k[block],
                        plan.alpha_level,
                        plan.mi_threshold,
                        plan.dtype,
                    )
                    for name in users:
                        failed[name][need[~passed]] = True
            for name in plan.criteria:
                passes[name][:, t_index] = ~failed[name]
                first[name] = first_double_pass(passes[name][:, : t_index + 1])
        return first


def first_passing_steps(
    blocks: dict[str, np.ndarray],
    offsets: np.ndarray,
    molecule_ids: np.ndarray,
    plan: PerMoleculePlan,
    seed: int,
    workers: int = 1,
    progress=None,
) -> dict[str, np.ndarray]:
    """Per criterion, each molecule's T (a grid value) or NOT_REACHED, in the order of `molecule_ids`."""
    groups = SizeGroups.from_offsets(offsets, molecule_ids)
    position = {int(m): i for i, m in enumerate(molecule_ids)}
    tasks, members = [], []
    for n, ids in groups.molecules.items():
        for start in range(0, len(ids), MOLECULES_PER_TASK):
            chunk = slice(start, start + MOLECULES_PER_TASK)
            x0 = {block: groups.gather(blocks[block], n, chunk) for block in plan.variance}
            tasks.append(MoleculeTask(x0, plan, (seed, n, start)))
            members.append(np.array([position[int(m)] for m in ids[chunk]]))
    result = {name: np.full(len(molecule_ids), NOT_REACHED) for name in plan.criteria}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for rows, first in zip(members, pool.map(MoleculeTask.run, tasks), strict=True):
            for name, index in first.items():
                result[name][rows] = np.where(index == NOT_REACHED, NOT_REACHED, plan.grid[np.maximum(index, 0)])
            if progress is not None:
                progress.update(len(rows))
    return result

"""The vectorised per-molecule procedure against a direct transcription of QuJX/GAGA with scipy and sklearn.

Gaussianity_test.py's gaussianity_score and GAGA_step_estimation.py's first double pass are transcribed here
literally (np.random.seed(42), np.random.choice, mutual_info_regression, kstest) on real QM9 molecules. The noise
is the reference's own too (`reference_noise`: its modified sample_combined_position_feature_noise centres both
the coordinate and the atom-type block per molecule), never the implementation's choice.
"""

import numpy as np
import sklearn
from scipy.stats import kstest
from sklearn.feature_selection import mutual_info_regression

from gaga.callbacks.gaussianity import GaussianityCallback
from gaga.data.elements import QM9_ATOMS
from gaga.gaussianity import FEATURES, POSITIONS, GaussianitySettings, estimate_variance, molecule_blocks
from gaga.gaussianity.blocks import SizeGroups
from gaga.gaussianity.reference_procedure import (
    NOT_REACHED,
    OVERALL,
    MoleculeTask,
    PerMoleculePlan,
    first_double_pass,
    run_test,
)
from gaga.gaussianity.tstar import REFERENCE_GRID, per_molecule_plan
from tests.conftest import EDM_ALPHA_BAR as ALPHA_BAR
from tests.conftest import tiny_setup

REFERENCE_VARIANCE = {POSITIONS: 1.380, FEATURES: 0.086}  # Gaussianity_test.py's QM9 constants
K = {POSITIONS: 2, FEATURES: 3}


def reference_noise(x0, rng):
    """The reference's forward noise for one molecule's block: standard normal, minus its mean over the atoms
    (both blocks: coordinates and atom types)."""
    eps = rng.standard_normal(x0.shape)
    return eps - eps.mean(axis=0)


def reference_mi_score(X, k, n_pairs):
    np.random.seed(42)
    values = []
    for _ in range(n_pairs):
        i, j = np.random.choice(X.shape[1], 2, replace=False)
        values.append(mutual_info_regression(X[:, [i]], X[:, j], n_neighbors=k)[0])
    return np.mean(values)


def reference_block_passes(X, variance, k):
    """gaussianity_score(X, mean=0, variance, alpha=0.05, k)["Overall_passed"]; `and` skips work, not results."""
    X_std = (X - 0) / np.sqrt(variance)
    n_pairs = X.shape[0] * 2
    return bool(
        kstest(X_std.flatten(), "norm")[1] > 0.05
        and reference_mi_score(X_std.T, k, n_pairs) < 0.1
        and reference_mi_score(X_std, k, n_pairs) < 0.1
    )


def reference_first_double_pass(passes_by_step):
    for i in range(len(passes_by_step) - 1):
        if passes_by_step[i] and passes_by_step[i + 1]:
            return i
    return NOT_REACHED


def expected_variance(block, t):
    return ALPHA_BAR[t] * REFERENCE_VARIANCE[block] + (1 - ALPHA_BAR[t])


def test_pass_fail_equals_transcription_on_50_molecules(qm9_train):
    sizes = qm9_train.num_atoms
    smallest = np.argsort(sizes, kind="stable")[np.sort(sizes) >= 4][:50]  # small molecules: fewer sklearn calls
    blocks, offsets = molecule_blocks(qm9_train.subset(smallest), QM9_ATOMS)
    rng = np.random.default_rng(0)
    saved = np.random.get_state()
    ours, oracle = [], []
    try:
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            for t in (300, 400, 500):
                for m in range(len(smallest)):
                    for block, values in blocks.items():
                        x0 = values[offsets[m] : offsets[m + 1]]
                        eps = reference_noise(x0, rng)
                        z = np.sqrt(ALPHA_BAR[t]) * x0 + np.sqrt(1 - ALPHA_BAR[t]) * eps
                        v = expected_variance(block, t)
                        oracle.append(reference_block_passes(z, v, K[block]))
                        ours.append(
                            all(
                                run_test(test, z[None], v, K[block], 0.05, 0.1, np.float32)[0]
                                for test in ("ks", "mi_atoms", "mi_columns")
                            )
                        )
    finally:
        np.random.set_state(saved)
    assert len(oracle) == 3 * 50 * 2
    assert 0.1 < np.mean(oracle) < 0.9  # both outcomes occur
    assert ours == oracle


def test_first_double_pass_is_the_reference_rule():
    table = np.random.default_rng(1).random((300, 11)) < 0.6
    expected = [reference_first_double_pass(row) for row in table]
    np.testing.assert_array_equal(first_double_pass(table), expected)


def test_short_circuit_leaves_every_molecules_step_unchanged(qm9_sample):
    blocks, offsets = molecule_blocks(qm9_sample, QM9_ATOMS)
    grid = np.array(REFERENCE_GRID)
    variance = {b: ALPHA_BAR[grid] * v + (1 - ALPHA_BAR[grid]) for b, v in REFERENCE_VARIANCE.items()}
    plan = PerMoleculePlan(grid, ALPHA_BAR, variance, K, 0.05, 0.1, (POSITIONS,), np.float32)
    groups = SizeGroups.from_offsets(offsets)
    for n in (12, 18):
        x0 = {b: groups.gather(blocks[b], n, slice(0, 40)) for b in blocks}
        steps = MoleculeTask(x0, plan, (7, n)).run()
        twin = MoleculeTask(x0, plan, (7, n))  # same seed: the same noise, evaluated on every molecule and step
        tests = ("ks", "mi_atoms", "mi_columns")
        flags = {f"{b}:{test}": np.zeros((len(x0[b]), len(grid)), bool) for b in blocks for test in tests}
        for t_index in range(len(grid)):
            z = twin.noised_blocks(t_index)
            for name, table in flags.items():
                block, test = name.split(":")
                table[:, t_index] = run_test(test, z[block], variance[block][t_index], K[block], 0.05, 0.1, np.float32)
        for criterion, tests in plan.criteria.items():
            passes = np.all([flags[test] for test in tests], axis=0)
            expected = [reference_first_double_pass(row) for row in passes]
            np.testing.assert_array_equal(steps[criterion], expected, err_msg=f"{criterion}, {n} atoms")
        assert (steps[OVERALL] != NOT_REACHED).any()


def test_evaluator_noise_is_the_reference_noise_for_a_gaga_model(qm9_sample):
    """The per-molecule procedure, configured as the callback configures it for a GAGA model (features zero-meaned),
    noises each molecule exactly as the reference: the same raw normal draws, centred per molecule in both blocks."""
    _, model = tiny_setup(zero_mean_features=True)
    settings = GaussianityCallback("auto", mode="per_molecule").evaluator_settings(model)
    blocks, offsets = molecule_blocks(qm9_sample, QM9_ATOMS)
    grid = np.array(REFERENCE_GRID)
    variance = estimate_variance(blocks, offsets, "reference_rms")
    plan = per_molecule_plan(blocks, ALPHA_BAR, variance, settings, grid)
    x0 = {b: SizeGroups.from_offsets(offsets).gather(blocks[b], 9, slice(0, 20)) for b in blocks}
    task, raw = MoleculeTask(x0, plan, (3, 9)), np.random.default_rng([3, 9])
    for t_index, t in enumerate(grid[:3]):
        ours = task.noised_blocks(t_index)
        for block in blocks:  # the task draws [molecules, N, F] float32 per block, in block order
            draws = raw.standard_normal(x0[block].shape, dtype=np.float32)
            eps = np.stack([reference_noise(d, _Replay(d)) for d in draws])
            expected = np.sqrt(ALPHA_BAR[t]) * x0[block] + np.sqrt(1 - ALPHA_BAR[t]) * eps
            np.testing.assert_allclose(ours[block], expected, atol=1e-5, err_msg=f"{block} at t = {t}")
    default = per_molecule_plan(blocks, ALPHA_BAR, variance, GaussianitySettings(mode="per_molecule"), grid)
    assert FEATURES not in default.zero_com_blocks  # the settings' own default is not the model's noise


class _Replay:
    """A generator that returns given draws: feeds the implementation's raw normals to the reference's centring."""

    def __init__(self, draws):
        self.draws = draws

    def standard_normal(self, shape):
        assert self.draws.shape == shape
        return self.draws

"""KS and KSG mutual information against their oracles: scipy.stats.kstest and sklearn's mutual_info_regression.

sklearn's only run-to-run randomness is a 1e-10 tie-breaking jitter, so on continuous data the estimates agree
to rounding; the exact Gaussian MI gives an independent check of the large-sample estimator.
"""

import numpy as np
import pytest
from scipy.stats import kstest
from sklearn.feature_selection import mutual_info_regression

from gaga.gaussianity.ks import ks_critical_value, ks_passes, ks_pvalue, ks_statistic
from gaga.gaussianity.mutual_info import (
    column_pair_mutual_information,
    ksg_mutual_information_large,
    paired_mutual_information,
    reference_pairs,
)


def _sklearn_mi(x, y, k, seed=0):
    return mutual_info_regression(x[:, None], y, n_neighbors=k, random_state=seed)[0]


def test_ks_statistic_and_pvalue_equal_scipy():
    rng = np.random.default_rng(0)
    for n, loc, scale in [(12, 0.0, 1.0), (54, 0.3, 1.7), (145, -0.1, 0.5)]:
        rows = rng.standard_t(5, size=(20, n)) * 1.2
        ours = ks_statistic(rows, loc, scale)
        oracle = [kstest(row, "norm", args=(loc, scale)) for row in rows]
        np.testing.assert_allclose(ours, [r.statistic for r in oracle], rtol=0, atol=1e-14)
        np.testing.assert_allclose(ks_pvalue(ours, n), [r.pvalue for r in oracle], rtol=1e-10, atol=1e-14)


def test_ks_passes_equals_pvalue_rule_at_the_boundary():
    n, alpha = 54, 0.05
    critical = ks_critical_value(n, alpha)
    statistics = critical * (1 + np.array([-1e-3, -1e-10, 0.0, 1e-10, 1e-3]))
    expected = ks_pvalue(statistics, n) > alpha
    np.testing.assert_array_equal(ks_passes(statistics, n, alpha), expected)
    assert expected[0] and not expected[-1]


@pytest.mark.parametrize("n, k", [(3, 2), (5, 3), (18, 3), (29, 2)])
def test_batched_mi_equals_sklearn(n, k):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((40, n))
    y = np.sin(2 * x) + 0.5 * rng.standard_normal((40, n))
    ours = paired_mutual_information(x.T, y.T, k)
    oracle = [_sklearn_mi(a, b, k) for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(ours, oracle, rtol=0, atol=1e-9)
    assert np.count_nonzero(ours) >= 10  # dependent data: an estimator stuck at 0 fails


def test_column_pairs_equal_sklearn_in_both_precisions():
    rng = np.random.default_rng(1)
    samples = rng.standard_normal((30, 18, 5))
    samples[..., 1] += samples[..., 0] ** 2
    pairs = np.array([(a, b) for a in range(5) for b in range(a + 1, 5)])
    oracle = np.array([[_sklearn_mi(s[:, a], s[:, b], 3) for a, b in pairs] for s in samples])
    np.testing.assert_allclose(column_pair_mutual_information(samples, pairs, 3), oracle, rtol=0, atol=1e-9)
    single = column_pair_mutual_information(samples, pairs, 3, np.float32)
    assert np.mean(np.abs(single - oracle) < 1e-6) > 0.99
    assert np.abs(single - oracle).max() < 0.05


def test_large_sample_mi_equals_sklearn_and_gaussian_truth():
    rng = np.random.default_rng(2)
    rho = 0.6
    x = rng.standard_normal(4000)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(4000)
    ours = ksg_mutual_information_large(x, y, 3)
    assert ours == pytest.approx(_sklearn_mi(x, y, 3), abs=1e-9)
    assert ours == pytest.approx(_sklearn_mi(x, y, 3, seed=1), abs=1e-9)
    assert ours == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.03)
    independent = ksg_mutual_information_large(x, rng.standard_normal(4000), 3, clip=False)
    assert abs(independent) < 0.03


def test_reference_pairs_replay_the_global_generator():
    """QuJX/GAGA seeds np.random with 42 and lets sklearn's jitter draw from the same generator."""
    saved = np.random.get_state()
    try:
        block = np.random.default_rng(3).standard_normal((7, 5))
        np.random.seed(42)
        drawn = []
        for _ in range(14):
            i, j = np.random.choice(5, 2, replace=False)
            drawn.append(tuple(sorted((int(i), int(j)))))
            mutual_info_regression(block[:, [i]], block[:, j], n_neighbors=3)
    finally:
        np.random.set_state(saved)
    pairs, counts = reference_pairs(5, 7, 14)
    replayed = {tuple(p): c for p, c in zip(pairs.tolist(), counts, strict=True)}
    assert replayed == {p: drawn.count(p) for p in set(drawn)}

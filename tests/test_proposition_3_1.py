"""experiments/proposition_3_1.py: its closed forms (cumulants, KS distance, MI, H^(K)) against scipy / sklearn on
samples noised directly, and the evaluator's T* ordered by the mixtures' separation as Proposition 3.1 says."""

import importlib.util

import numpy as np
import pytest
from scipy.stats import kstat, kstest
from sklearn.feature_selection import mutual_info_regression

from gaga.config import REPO_ROOT
from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import gaussianity_functional

spec = importlib.util.spec_from_file_location("proposition_3_1", REPO_ROOT / "experiments" / "proposition_3_1.py")
proposition = importlib.util.module_from_spec(spec)
spec.loader.exec_module(proposition)

ALPHA_BAR = NoiseSchedule("polynomial_2", 1000, 1e-5).alpha_bar()
A = 0.85


def noised(a: float, t: int, n: int, seed: int = 0) -> np.ndarray:
    """x_t = alpha_t x + sigma_t eps of n mixture draws, noised here (not through the module's closed forms)."""
    rng = np.random.default_rng(seed)
    x = proposition.sample_mixture(a, n, rng)
    return np.sqrt(ALPHA_BAR[t]) * x + np.sqrt(1 - ALPHA_BAR[t]) * rng.standard_normal(x.shape)


@pytest.mark.parametrize("t", [0, 300, 600])
def test_noised_cumulants_match_kstat(t):
    x_t = noised(A, t, 400_000)
    a_t = np.sqrt(ALPHA_BAR[t]) * A  # the noised mixture has separation alpha_t a and unit variance
    assert kstat(x_t[:, 0], 2) == pytest.approx(1.0, abs=0.01)
    assert kstat(x_t[:, 1], 3) == pytest.approx(float(proposition.mixture_cumulant(a_t, 3)), abs=0.02)
    # kappa_4 of x_t is alpha_t^4 kappa_4(x): the scaling law the closed forms rest on (sd of kstat(4) ~ 0.008 here)
    assert kstat(x_t[:, 0], 4) == pytest.approx(ALPHA_BAR[t] ** 2 * float(proposition.mixture_cumulant(A, 4)), abs=0.04)
    assert np.cov(x_t.T)[0, 1] == pytest.approx(a_t**2, abs=0.01)


@pytest.mark.parametrize("t", [0, 400])
def test_closed_form_ks_and_functional_match_samples(t):
    x_t = noised(A, t, 200_000, seed=1)
    ks = float(proposition.ks_closed_form(A, ALPHA_BAR[[t]])[0])
    assert kstest(x_t[:, 0], "norm").statistic == pytest.approx(ks, abs=0.006)
    h = float(proposition.functional_closed_form(A, ALPHA_BAR[[t]])[0])
    assert gaussianity_functional(x_t) == pytest.approx(h, rel=0.05)


def test_closed_form_mi_matches_sklearn():
    x = noised(A, 0, 4000, seed=2)
    expected = mutual_info_regression(x[:, :1], x[:, 1], n_neighbors=3, random_state=0)[0]
    dep = float(proposition.dependence_closed_form(A, ALPHA_BAR[[0]])[0])  # MI / 2
    assert 2 * dep == pytest.approx(expected, abs=0.04)
    assert proposition.dependence_closed_form(0.0, ALPHA_BAR[[0]])[0] == pytest.approx(0.0, abs=1e-9)


def test_evaluator_t_star_ordered_by_separation():
    options = {"search": "grid", "dep_null_draws": 2}
    steps = [
        proposition.evaluator_run(a, 0.02, 0.01, molecules=1000, atoms=4, alpha_bar=ALPHA_BAR, **options).t_star
        for a in (0.4, 0.95)
    ]
    assert steps[0] < steps[1], steps
    assert proposition.ordering(steps) == "strictly increasing"

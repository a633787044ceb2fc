"""Gaussianity functional H^(K) of Proposition 3.1: zero for Gaussians, positive otherwise, and its path along t.

Oracles: a unit-variance Laplace law has fourth cumulant 3 (excess kurtosis 3) and zero third cumulant.
"""

import numpy as np
import pytest

from gaga.gaussianity import functional_along_t, gaussianity_functional
from gaga.gaussianity.functional import cumulant_norms

N = 200_000


def _laplace(rng, dims):
    return rng.laplace(scale=1 / np.sqrt(2), size=(N, dims))  # unit variance


def test_gaussian_near_zero_laplace_positive():
    rng = np.random.default_rng(0)
    gaussian = gaussianity_functional(rng.standard_normal((N, 3)))
    laplace = gaussianity_functional(_laplace(rng, 3))
    assert gaussian < 0.15
    assert laplace > 10 * gaussian
    assert laplace == pytest.approx(3 * np.sqrt(3), rel=0.15)  # ||C4||_F of 3 independent Laplace columns


def test_covariance_term_sees_correlation():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, 2))
    x[:, 1] = 0.5 * x[:, 0] + np.sqrt(0.75) * x[:, 1]
    assert cumulant_norms(x, order=2)[2] == pytest.approx(0.5 * np.sqrt(2), rel=0.03)
    assert gaussianity_functional(x, order=2) == pytest.approx(0.5 * np.sqrt(2), rel=0.03)


def test_path_along_t_matches_noised_samples():
    rng = np.random.default_rng(2)
    x0 = _laplace(rng, 2)
    for alpha_bar in (0.9, 0.5):
        noised = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * rng.standard_normal(x0.shape)
        assert functional_along_t(x0, [alpha_bar])[0] == pytest.approx(gaussianity_functional(noised), abs=0.12)
    path = functional_along_t(x0, np.linspace(1, 0, 11))
    assert np.all(np.diff(path) < 0) and path[-1] == 0.0


def test_bad_order_and_weights_are_named():
    with pytest.raises(ValueError, match="order K"):
        gaussianity_functional(np.zeros((10, 2)), order=5, weights=(1, 1, 1))
    with pytest.raises(ValueError, match="weights"):
        gaussianity_functional(np.zeros((10, 2)), order=4, weights=(1.0,))

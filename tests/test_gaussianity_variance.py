"""Dataset variance estimators against docs/references.md, closed-form v_t against noised QM9, the reference sampler.

Data: the real QM9 training split (estimators) and 3,000 of its molecules (closed form, sampler).
"""

import numpy as np
import pytest
import torch

from gaga.data.elements import QM9_ATOMS
from gaga.gaussianity import (
    FEATURES,
    POSITIONS,
    estimate_variance,
    marginal_variance,
    molecule_blocks,
    reference_std,
    sample_reference_gaussian,
)
from tests.conftest import EDM_ALPHA_BAR as ALPHA_BAR


@pytest.fixture(scope="module")
def train_blocks(qm9_train):
    return molecule_blocks(qm9_train, QM9_ATOMS)


def test_reference_rms_reproduces_reference_code(train_blocks):
    """QuJX/GAGA: 1.380 (coordinates), 0.086 (atom types), 0.848 (all 8 columns)."""
    per_block = estimate_variance(*train_blocks, "reference_rms")
    pooled = estimate_variance(*train_blocks, "reference_rms", per_component=False)
    assert per_block.data[POSITIONS] == pytest.approx(1.380, abs=0.005)
    assert per_block.data[FEATURES] == pytest.approx(0.086, abs=0.005)
    assert pooled.data["all"] == pytest.approx(0.848, abs=0.005)
    assert pooled.noise["all"] == 1.0


def test_unbiased_reproduces_measured_anchor(train_blocks):
    """docs/references.md: mean unbiased per-molecule variance 1.963 (coordinates) and 0.0075 (atom types)."""
    estimate = estimate_variance(*train_blocks, "unbiased")
    assert estimate.data[POSITIONS] == pytest.approx(1.963, rel=0.01)
    assert estimate.data[FEATURES] == pytest.approx(0.0075, rel=0.01)


def _noised(blocks, offsets, alpha_bar_t, rng):
    counts = np.diff(offsets)
    z = {}
    for name, x0 in blocks.items():
        eps = rng.standard_normal(x0.shape)
        if name == POSITIONS:  # EDM's coordinate noise has zero centre of mass
            eps -= np.repeat(np.add.reduceat(eps, offsets[:-1]) / counts[:, None], counts, axis=0)
        z[name] = np.sqrt(alpha_bar_t) * x0 + np.sqrt(1 - alpha_bar_t) * eps
    return z


@pytest.mark.parametrize("estimator", ["unbiased", "ml"])
@pytest.mark.parametrize("per_component", [True, False])
def test_closed_form_variance_matches_noised_data(sample_blocks, estimator, per_component):
    blocks, offsets = sample_blocks
    estimate = estimate_variance(blocks, offsets, estimator, per_component)
    rng = np.random.default_rng(0)
    for t in (100, 300, 550, 800):
        predicted = marginal_variance(estimate, ALPHA_BAR[t])
        measured = estimate_variance(_noised(blocks, offsets, ALPHA_BAR[t], rng), offsets, estimator, per_component)
        for name, value in predicted.items():
            assert measured.data[name] == pytest.approx(value, rel=0.02), (t, name)


def test_paper_formula_when_noise_is_unit(sample_blocks):
    estimate = estimate_variance(*sample_blocks, "unbiased", zero_com_blocks=())
    v_hat = estimate.data[FEATURES]
    variance = marginal_variance(estimate, ALPHA_BAR[550])[FEATURES]
    assert variance == pytest.approx(1 - ALPHA_BAR[550] * (1 - v_hat), rel=1e-12)


def test_reference_sampler_variance_of_reference_code():
    """QuJX/GAGA's sampling code notes v_t = 0.9261 at t=550 for its QM9 dataset variance 0.848."""
    from gaga.gaussianity.variance import VarianceEstimate

    reference = VarianceEstimate("reference_rms", False, {"all": 0.848}, {"all": 1.0})
    assert reference_std(reference, ALPHA_BAR[550])["all"] ** 2 == pytest.approx(0.9261, abs=5e-4)


def test_sampler_zero_com_and_target_variance(qm9_sample, sample_blocks):
    blocks, offsets = sample_blocks
    estimate = estimate_variance(blocks, offsets, "unbiased")
    batch = torch.from_numpy(np.repeat(np.arange(len(qm9_sample)), qm9_sample.num_atoms))
    generator = torch.Generator().manual_seed(0)
    z = sample_reference_gaussian(
        batch, {POSITIONS: 3, FEATURES: 5}, estimate, ALPHA_BAR[550], generator=generator, dtype=torch.float64
    ).numpy()
    centres = np.add.reduceat(z[:, :3], offsets[:-1]) / qm9_sample.num_atoms[:, None]
    assert np.abs(centres).max() < 1e-12
    measured = estimate_variance({POSITIONS: z[:, :3], FEATURES: z[:, 3:]}, offsets, "unbiased")
    for name, value in marginal_variance(estimate, ALPHA_BAR[550]).items():
        assert measured.data[name] == pytest.approx(value, rel=0.02), name


def test_sampler_names_blocks_without_variance(sample_blocks):
    estimate = estimate_variance(*sample_blocks, "unbiased")
    with pytest.raises(ValueError, match=r"\['charges'\] have no variance"):
        sample_reference_gaussian(torch.zeros(4, dtype=torch.long), {POSITIONS: 3, "charges": 1}, estimate, 0.5)

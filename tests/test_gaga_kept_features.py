"""gaga.features=kept: GAGA with EDM's atom features as they are, the closed form carrying their per-column mean.

Oracles: a Monte Carlo of the real forward process on QM9 (the model's own `diffuse`, and the flow path), numpy's
column mean and variance, scipy's two-sample KS against the true z_T*, torch.distributions' Gaussian KL, and data
drawn from the closed form itself (on which every step must pass the distance test).
"""

import json

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from gaga.cli import run_sampling, run_training
from gaga.config import compose
from gaga.data.elements import QM9_ATOMS
from gaga.diffusion.forward import diffuse
from gaga.diffusion.losses import gaussian_kl_per_entry
from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import (
    FEATURES,
    POSITIONS,
    GaussianitySettings,
    find_t_star,
    marginal_mean,
    marginal_variance,
    molecule_blocks,
    sample_reference_gaussian,
)
from gaga.gaussianity.choice import choose_variance
from gaga.models.checkpoints import load_model
from tests.conftest import EDM_ALPHA_BAR, tiny_setup
from tests.train_runs import TINY_FIT

KEPT = {"zero_com_blocks": (POSITIONS,), "kept_blocks": (FEATURES,)}


@pytest.fixture(scope="module")
def kept_blocks(qm9_sample):
    """QM9's zero-CoM coordinates and EDM's uncentred one-hot / 4, with the kept-features closed form."""
    blocks, offsets = molecule_blocks(qm9_sample, QM9_ATOMS, center_features=False)
    estimate, start = choose_variance(blocks, offsets, "exact", **KEPT)
    return blocks, offsets, estimate, start


def test_moments_are_numpys_column_mean_and_variance(kept_blocks):
    blocks, _, estimate, start = kept_blocks
    np.testing.assert_allclose(estimate.mean[FEATURES], blocks[FEATURES].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(start[FEATURES], blocks[FEATURES].var(axis=0), rtol=1e-12)
    assert FEATURES in estimate.mean and POSITIONS not in estimate.mean  # coordinates stay zero-mean


@pytest.mark.parametrize("t", [10, 200, 550, 800])
def test_closed_form_matches_the_forward_process_per_column(kept_blocks, t):
    """Column j of z_t over atoms: mean sqrt(alpha_bar) m_j, variance alpha_bar v_j + 1 - alpha_bar (4 noise draws)."""
    blocks, offsets, estimate, _ = kept_blocks
    schedule = NoiseSchedule("polynomial_2", 1000, 1e-5)
    pos = torch.from_numpy(blocks[POSITIONS])
    h = torch.from_numpy(blocks[FEATURES])
    batch = torch.from_numpy(np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)))
    steps = torch.full((len(offsets) - 1,), t)
    generator = torch.Generator().manual_seed(t)
    draws = torch.cat([diffuse(pos, h, steps, schedule, batch, False, generator)[1] for _ in range(4)]).numpy()
    alpha_bar = EDM_ALPHA_BAR[t]
    mean, variance = marginal_mean(estimate, FEATURES, alpha_bar), marginal_variance(estimate, alpha_bar)[FEATURES]
    standard_error = np.sqrt(variance / len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4 * standard_error), (draws.mean(axis=0), mean)
    np.testing.assert_allclose(draws.var(axis=0), variance, rtol=4 * np.sqrt(2 / len(draws)) + 1e-3)


def test_start_gaussian_is_the_true_z_t_star_and_n01_is_not(kept_blocks):
    """Two-sample KS per column between the start draw and the true z_550 of the same atoms: kept's mean-aware start
    is within the KS noise; N(0, v_t) without the mean is not, for H and C (the columns with large means)."""
    blocks, offsets, estimate, _ = kept_blocks
    alpha_bar = EDM_ALPHA_BAR[550]
    rng = np.random.default_rng(1)
    x = blocks[FEATURES]
    true = np.sqrt(alpha_bar) * x + np.sqrt(1 - alpha_bar) * rng.standard_normal(x.shape)
    batch = torch.from_numpy(np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)))
    drawn = sample_reference_gaussian(
        batch,
        {FEATURES: x.shape[1]},
        estimate,
        alpha_bar,
        (),
        generator=torch.Generator().manual_seed(2),
        dtype=torch.float64,
    ).numpy()
    unshifted = drawn - marginal_mean(estimate, FEATURES, alpha_bar)
    critical = 1.95 * np.sqrt(2 / len(x))  # the two-sample KS critical value at 0.1 %
    for column in range(x.shape[1]):
        assert ks_2samp(drawn[:, column], true[:, column]).statistic < critical, column
    for column in (0, 1):  # H, C
        assert ks_2samp(unshifted[:, column], true[:, column]).statistic > critical, column


def test_evaluator_passes_closed_form_data_at_every_step_only_with_the_mean():
    """Features drawn i.i.d. from N(m_j, v_j) are, at every t, exactly the closed form's N(sqrt(a) m, a v + 1 - a):
    D_t must pass from t = 0 under kept. Tested as zero-meaned (the paper's reference N(0, v_t)) they fail at t = 0."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 20, 1500)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    mean, std = np.array([0.5, 0.25, 0.1]), np.array([0.1, 0.3, 0.05])
    features = mean + std * rng.standard_normal((offsets[-1], 3))
    positions = rng.standard_normal((offsets[-1], 3))
    positions -= np.repeat(np.add.reduceat(positions, offsets[:-1]) / sizes[:, None], sizes, axis=0)
    blocks = {POSITIONS: positions, FEATURES: features}
    settings = {"grid": (0, 100, 300), "tested_blocks": (FEATURES,), "dataset_molecules": 1500, "dep_null_draws": 0}
    kept = find_t_star(blocks, offsets, EDM_ALPHA_BAR, GaussianitySettings(**settings, **KEPT), progress=False)
    assert kept.t_ds[FEATURES] == 0
    assert kept.curves["D:features"][0] < 0.01
    np.testing.assert_allclose(kept.variance["mean"][FEATURES], features.mean(axis=0))
    paper = GaussianitySettings(**settings, zero_com_blocks=(POSITIONS,))
    assert find_t_star(blocks, offsets, EDM_ALPHA_BAR, paper, progress=False).t_ds[FEATURES] != 0  # None: never


@pytest.mark.parametrize("choice", ["paper", "reference"])
def test_variances_of_zero_meaned_data_are_refused_under_kept(kept_blocks, choice):
    blocks, offsets, _, _ = kept_blocks
    with pytest.raises(ValueError, match=f"gaga.variance={choice} .*gaga.features=kept use gaga.variance=exact"):
        choose_variance(blocks, offsets, choice, **KEPT)
    with pytest.raises(ValueError, match="gaga.features=kept use gaga.variance=exact"):
        GaussianitySettings(variance=choice, **KEPT)


def test_per_molecule_mode_runs_with_per_column_variances(kept_blocks):
    blocks, offsets, _, _ = kept_blocks
    settings = GaussianitySettings(mode="per_molecule", variance="exact", per_molecule_sample=40, workers=1, **KEPT)
    result = find_t_star(blocks, offsets, EDM_ALPHA_BAR, settings, progress=False)
    assert result.summary["fraction_reached"]["overall"] > 0.5
    assert 0 < result.t_star <= 1000


def test_prior_kl_per_entry_is_torchs_gaussian_kl():
    generator = torch.Generator().manual_seed(0)
    mean_q, q_sigma = torch.randn(7, 5, generator=generator), torch.rand(7, 1, generator=generator) + 0.1
    mean_p, p_variance = torch.randn(5, generator=generator), torch.rand(5, generator=generator) + 0.2
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean_q, q_sigma.expand(7, 5)), torch.distributions.Normal(mean_p, p_variance.sqrt())
    )
    torch.testing.assert_close(gaussian_kl_per_entry(mean_q, q_sigma, mean_p, p_variance), expected)


def test_flow_path_start_has_the_paths_mean_and_variance(kept_blocks):
    """On the flow path z_t = (1 - t) x + t eps, column j has mean (1 - t) m_j and variance (1 - t)^2 v_j + t^2:
    what the flow-matching model's start Gaussian must be at T*."""
    blocks, _, estimate, start = kept_blocks
    linear = {"_target_": "gaga.diffusion.flow_path.FlowPath", "timesteps": 100, "kind": "linear", "sigma_min": 0.0}
    _, model = tiny_setup("flow_matching", schedule=linear)
    kept = {"t_star": 60, "v_hat": {"pos": 2.0, "h": start[FEATURES]}, "mean": {"h": estimate.mean[FEATURES]}}
    model.set_truncation(kept)
    t = 0.6
    x = blocks[FEATURES]
    path = (1 - t) * x + t * np.random.default_rng(3).standard_normal(x.shape)
    gaussian = model.truncation.start_gaussian(60)
    np.testing.assert_allclose(gaussian.mean_h.numpy(), path.mean(axis=0), atol=4 * t / np.sqrt(len(x)))
    np.testing.assert_allclose(gaussian.variance_h.numpy(), path.var(axis=0), rtol=0.02)


def test_kept_trains_resumes_and_samples_through_the_cli(tmp_path):
    """train.py with gaga.features=kept finds T* with the features' mean, a resumed run keeps it, and sample.py
    starts from the mean-aware Gaussian at T*."""
    overrides = [*TINY_FIT, "gaga.features=kept", "gaga.dataset_molecules=200", "logger=csv"]
    first = run_training(compose("train", overrides, output_dir=str(tmp_path / "a")))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    stored = torch.load(last, weights_only=True)["hyper_parameters"]
    truncation = torch.load(last, weights_only=True)["truncation"]
    assert stored["zero_mean_features"] is False and len(truncation["mean"]["h"]) == QM9_ATOMS.num_types
    resumed_overrides = [*overrides, "trainer.max_epochs=2", f"ckpt_path={last}"]
    run_training(compose("train", resumed_overrides, output_dir=str(tmp_path / "b")))
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4 and resumed["truncation"] == truncation
    assert first["metrics"]["train/loss"] > 0
    model = load_model(last)
    t_star = truncation["t_star"]
    assert model.truncation.start_gaussian().mean_h is not None
    sample = compose("sample", [f"ckpt={last}", "n_samples=3", "batch_size=3", "evaluate=false"], str(tmp_path / "s"))
    run_sampling(sample)
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["start_step"] == t_star

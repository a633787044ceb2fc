"""Tests of EDM's l2 training loss and NLL estimate on real QM9 molecules.

Oracles: chi-square expectations for a denoiser that predicts zero noise, scipy's normal CDF for the
discretised likelihood, and closed-form sums over the schedule's float64 gamma table.
"""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from gaga.data.elements import QM9_ATOMS
from gaga.diffusion.forward import Normalizer, StartGaussian, remove_mean
from gaga.diffusion.losses import (
    OneHotLikelihood,
    ZeroStep,
    l2_loss,
    log_p_h_given_z0,
    log_prob_num_atoms,
    nll_estimate,
)
from gaga.diffusion.schedules import NoiseSchedule
from gaga.nn import EGNNDynamics

NORMALIZER = Normalizer.from_edm([1, 4, 10], include_charges=True)  # EDM's QM9 setting
ONE_HOT = OneHotLikelihood(NORMALIZER)
SCHEDULE = NoiseSchedule("polynomial_2", 1000, 1e-5)


def qm9_batch(molecules, count):
    """The first `count` molecules as (pos, h, batch, num_graphs), normalised like EDM."""
    subset = molecules.subset(np.arange(count))
    counts = torch.from_numpy(subset.num_atoms)
    batch = torch.repeat_interleave(torch.arange(count), counts)
    types = torch.from_numpy(QM9_ATOMS.encode(subset.atomic_numbers))
    charges = torch.from_numpy(subset.atomic_numbers.astype(np.int64))
    pos = remove_mean(torch.from_numpy(subset.positions), batch)
    pos, h = NORMALIZER.encode(pos, torch.eye(QM9_ATOMS.num_types)[types], charges)
    return pos, h, batch, count


def zero_denoiser(pos, h, t, batch):
    return torch.zeros_like(pos), torch.zeros_like(h)


def test_l2_loss_with_zero_prediction_is_edm_normalised_chi_square(qm9_sample):
    pos, h, batch, num_graphs = qm9_batch(qm9_sample, 3000)
    gen = torch.Generator().manual_seed(0)
    loss, t = l2_loss(zero_denoiser, SCHEDULE, ONE_HOT, pos, h, batch, num_graphs, t_min=1, generator=gen)
    counts = torch.bincount(batch).double()
    # E||eps||^2 = (N - 1) * 3 + N * F; EDM halves it (0.5 * SNR_weight * error) and divides by (3 + F) * N_max
    expected = 0.5 * ((counts - 1) * 3 + counts * h.shape[1]) / ((3 + h.shape[1]) * counts.max())
    assert loss.shape == (num_graphs,) and t.min() >= 1
    assert loss.double().mean().item() == pytest.approx(expected.mean().item(), rel=0.01)


def test_l2_loss_at_t0_is_edm_reconstruction_term(qm9_sample):
    pos, h, batch, num_graphs = qm9_batch(qm9_sample, 500)
    loss, t = l2_loss(zero_denoiser, SCHEDULE, ONE_HOT, pos, h, batch, num_graphs, t_min=0, start_step=0)
    counts = torch.bincount(batch).double()
    # -log p(h | z_0) vanishes at sigma_0 = 3e-3, leaving half the coordinate chi-square
    expected = 0.5 * (counts - 1) * 3 / ((3 + h.shape[1]) * counts.max())
    assert (t == 0).all()
    assert loss.double().mean().item() == pytest.approx(expected.mean().item(), rel=0.03)


def test_l2_loss_draws_steps_from_the_truncated_range(qm9_sample):
    pos, h, batch, num_graphs = qm9_batch(qm9_sample, 3000)
    _, t = l2_loss(zero_denoiser, SCHEDULE, ONE_HOT, pos, h, batch, num_graphs, start_step=550)
    assert t.min() == 0 and t.max() == 550  # both ends of {0..550} are drawn among 3,000 molecules
    for t_min, start_step in [(10, 5), (0, 1001)]:
        with pytest.raises(ValueError, match="t_min <= start_step <= T=1000"):
            l2_loss(zero_denoiser, SCHEDULE, ONE_HOT, pos, h, batch, num_graphs, t_min=t_min, start_step=start_step)


def test_nll_diffusion_term_matches_schedule_sum_for_zero_prediction(qm9_sample):
    """Over t = 1..T, the estimator's mean is sum_t 0.5 (SNR(t-1)/SNR(t) - 1) E||eps||^2."""
    pos, h, batch, num_graphs = qm9_batch(qm9_sample.subset(np.zeros(1000, dtype=np.int64)), 1000)
    log_pn = torch.zeros(num_graphs)
    t = torch.arange(1, 1001)
    terms = nll_estimate(zero_denoiser, SCHEDULE, NORMALIZER, pos, h, batch, num_graphs, log_pn, ONE_HOT, t=t)
    gamma = SCHEDULE.gamma_table.numpy()
    n = int(torch.bincount(batch)[0])
    expected = 0.5 * np.expm1(gamma[1:] - gamma[:-1]).sum() * ((n - 1) * 3 + n * h.shape[1])
    assert terms["diffusion"].double().mean().item() == pytest.approx(expected, rel=0.05)
    # L_0 with zero prediction is half a chi-square with (N - 1) * 3 degrees of freedom
    assert terms["x_given_z0"].double().mean().item() == pytest.approx(0.5 * (n - 1) * 3, rel=0.02)


def test_nll_of_random_egnn_is_finite_with_edm_constants(qm9_sample):
    pos, h, batch, num_graphs = qm9_batch(qm9_sample, 32)
    torch.manual_seed(0)
    net = EGNNDynamics(h.shape[1], hidden_nf=32, n_layers=2)
    hist = {int(k): int(v) for k, v in zip(*np.unique(qm9_sample.num_atoms, return_counts=True), strict=True)}
    counts = torch.bincount(batch)
    log_pn = log_prob_num_atoms(hist, counts)
    with torch.no_grad():
        terms = nll_estimate(net, SCHEDULE, NORMALIZER, pos, h, batch, num_graphs, log_pn, ONE_HOT)
        loss, _ = l2_loss(net, SCHEDULE, ONE_HOT, pos, h, batch, num_graphs)
    assert all(torch.isfinite(value).all() for value in terms.values()) and torch.isfinite(loss).all()
    # the sigma_0 constants: -log N(0; 0, sigma_0 / alpha_0) per zero-CoM dimension, gamma_0 from docs/references.md
    per_dim = 0.5 * -11.51291546 + 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(terms["constants"].numpy(), ((counts - 1) * 3).numpy() * per_dim, rtol=1e-5)
    assert terms["kl_prior"].abs().max() < 1e-2  # "negligible in practice" (EDM) at T = 1000
    # untrained: every step's loss is of the order of the noise dimension, giving thousands of nats
    assert 500 < terms["nll"].mean().item() < 20000


def test_log_p_h_given_z0_matches_scipy_bin_masses():
    sigma_0 = 0.05
    onehot = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 1, 0]])
    charges = torch.tensor([1, 8])
    z_onehot = torch.tensor([[0.9, 0.3, 0.0, 0.6, 0.1], [0.2, 0.1, 0.0, 0.7, 0.8]])
    z_charges = torch.tensor([1.3, 7.2])
    _, h = NORMALIZER.encode(torch.zeros(2, 3), onehot, charges)
    _, h_0 = NORMALIZER.encode(torch.zeros(2, 3), z_onehot, z_charges)
    got = log_p_h_given_z0(h_0, h, torch.full((2, 1), sigma_0), NORMALIZER, torch.tensor([0, 1]), 2)

    def bin_mass(center, lo, hi, sigma):
        return norm.cdf(hi, loc=center, scale=sigma) - norm.cdf(lo, loc=center, scale=sigma)

    for atom in range(2):
        masses = bin_mass(z_onehot[atom].double().numpy(), 0.5, 1.5, sigma_0 * 4)
        truth = int(onehot[atom].argmax())
        log_type = np.log(masses[truth] + 1e-10) - np.log(np.sum(masses + 1e-10))
        q = float(charges[atom])
        log_charge = np.log(bin_mass(float(z_charges[atom]), q - 0.5, q + 0.5, sigma_0 * 10) + 1e-10)
        assert got[atom].item() == pytest.approx(log_type + log_charge, abs=1e-4)


def test_one_hot_likelihood_scores_zero_meaned_features_as_their_one_hot(qm9_sample):
    """GAGA's zero-meaned features: -log p(h | z_0) equals EDM's term on the un-centred one-hot and z_0 (whose
    bins the scipy test above checks), and is a proper negative log-probability (>= 0)."""
    normalizer = Normalizer.from_edm([1, 4, 10])
    pos, h, batch, num_graphs = qm9_batch(qm9_sample, 20)
    h = h[:, :5]  # the one-hot columns only (GAGA runs leave charges out)
    centred = remove_mean(h, batch, num_graphs)
    h_0 = centred + 0.01 * torch.randn(centred.shape, generator=torch.Generator().manual_seed(0), dtype=h.dtype)
    sigma_0 = torch.full((len(h), 1), 0.01, dtype=h.dtype)
    got = OneHotLikelihood(normalizer)(ZeroStep(h_0, centred, torch.zeros(num_graphs), sigma_0, batch, num_graphs))
    expected = -log_p_h_given_z0(h_0 + (h - centred), h, sigma_0, normalizer, batch, num_graphs)
    torch.testing.assert_close(got, expected)
    assert bool((got >= 0).all())
    plain = OneHotLikelihood(normalizer)(ZeroStep(h_0, h, torch.zeros(num_graphs), sigma_0, batch, num_graphs))
    torch.testing.assert_close(plain, -log_p_h_given_z0(h_0, h, sigma_0, normalizer, batch, num_graphs))


def test_log_prob_num_atoms_follows_histogram():
    log_p = log_prob_num_atoms({3: 1, 5: 3}, torch.tensor([5, 3, 4]))
    np.testing.assert_allclose(log_p.numpy(), [np.log(0.75), np.log(0.25), np.log(1e-30)], rtol=1e-6)


def test_truncated_prior_kl_is_the_gaussian_kl_at_t_star(qm9_sample):
    """GAGA: KL(q(z_T* | x) || N(0, v I)) with separate v for coordinates and features, standard formula."""
    pos, h, batch, num_graphs = qm9_batch(qm9_sample, 8)
    variances = (1.2, 0.9)
    terms = nll_estimate(
        zero_denoiser,
        SCHEDULE,
        NORMALIZER,
        pos,
        h,
        batch,
        num_graphs,
        torch.zeros(num_graphs),
        ONE_HOT,
        start=StartGaussian(550, *variances),
    )
    alpha2 = SCHEDULE.alpha_bar()[550]
    counts = torch.bincount(batch).double()
    expected = torch.zeros(num_graphs, dtype=torch.float64)
    for block, dims, v in [(pos, (counts - 1) * 3, variances[0]), (h, counts * h.shape[1], variances[1])]:
        sq_norm = torch.zeros(num_graphs, dtype=torch.float64).index_add_(0, batch, (block.double() ** 2).sum(1))
        ratio = (1 - alpha2) / v
        expected += 0.5 * dims * (ratio - 1 - np.log(ratio)) + 0.5 * alpha2 * sq_norm / v
    np.testing.assert_allclose(terms["kl_prior"].double().numpy(), expected.numpy(), rtol=1e-4)
    assert (expected > 1.0).all()  # unlike EDM's prior at T, the truncated prior's KL is not negligible

"""Tests with exact denoisers: for data x ~ N(mu, v) (v = 0: one known molecule) eps_hat(z_t) is closed-form.

A perfect denoiser must zero the l2 loss, reduce EDM's NLL to its sigma_0 constants, let both samplers
recover the molecule, and let them reproduce Gaussian data with the variance of Ho et al.'s posterior chain.
"""

import numpy as np
import pytest
import torch

from gaga.diffusion.decoding import OneHotDecoder
from gaga.diffusion.forward import Normalizer, remove_mean, sample_noise
from gaga.diffusion.losses import OneHotLikelihood, l2_loss, nll_estimate
from gaga.diffusion.samplers import DDIM, Ancestral, Chain, run
from gaga.diffusion.schedules import NoiseSchedule

SCHEDULE = NoiseSchedule("polynomial_2", 1000, 1e-5)
NORMALIZER = Normalizer.from_edm([1, 4, 10], include_charges=True)
SIZES = [5, 9, 3]


def gaussian_oracle(mean_pos, mean_h, variance):
    """Exact E[eps | z_t] = sigma_t (z_t - alpha_t mu) / (alpha_t^2 v + sigma_t^2) for data N(mu, v I)."""

    def denoiser(pos, h, t, batch):
        step = torch.round(t * SCHEDULE.timesteps).long()[batch, None]
        alpha, sigma = SCHEDULE.alpha(step).double(), SCHEDULE.sigma(step).double()
        total = alpha**2 * variance + sigma**2
        return sigma * (pos - alpha * mean_pos) / total, sigma * (h - alpha * mean_h) / total

    return denoiser


def known_molecules(seed=0):
    """Random molecules (float64) with types and charges, as (pos, h, types, charges, batch)."""
    gen = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    pos = remove_mean(1.5 * torch.randn(len(batch), 3, generator=gen, dtype=torch.float64), batch)
    types = torch.randint(0, 5, (len(batch),), generator=gen)
    charges = torch.tensor([1, 6, 7, 8, 9])[types]
    pos, h = NORMALIZER.encode(pos, torch.eye(5, dtype=torch.float64)[types], charges)
    return pos, h.double(), types, charges, batch


def sample(sampler, oracle, decode, pos, h, batch, t_start, generator=None):
    """`sampler` from (pos, h) at step t_start with the exact denoiser `oracle`."""
    chain = Chain(oracle, SCHEDULE, batch, generator=generator)
    return run(sampler, chain, decode, pos, h, sampler.steps(t_start, SCHEDULE.timesteps))


def test_perfect_denoiser_has_zero_l2_loss():
    pos, h, _, _, batch = known_molecules()
    oracle = gaussian_oracle(pos, h, 0.0)
    loss, t = l2_loss(oracle, SCHEDULE, OneHotLikelihood(NORMALIZER), pos, h, batch, len(SIZES), t_min=1)
    assert t.min() >= 1 and loss.abs().max() < 1e-8


def test_perfect_denoiser_nll_reduces_to_edm_constants():
    pos, h, _, _, batch = known_molecules()
    oracle = gaussian_oracle(pos, h, 0.0)
    log_pn = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    terms = nll_estimate(oracle, SCHEDULE, NORMALIZER, pos, h, batch, len(SIZES), log_pn, OneHotLikelihood(NORMALIZER))
    dims = (torch.tensor(SIZES) - 1) * 3
    # -log N(0; 0, sigma_0 / alpha_0) per zero-CoM dimension, gamma_0 = -11.51291546 (docs/references.md); - log p(N)
    expected = dims.double() * (0.5 * -11.51291546 + 0.5 * np.log(2 * np.pi)) - log_pn.double()
    assert terms["diffusion"].abs().max() < 1e-3 and terms["x_given_z0"].abs().max() < 1e-3
    np.testing.assert_allclose(terms["nll"].double().numpy(), expected.numpy(), atol=0.01)


@pytest.mark.parametrize("t_start, stride", [(1000, 1), (1000, 10), (550, 5)])
def test_samplers_recover_a_known_molecule(t_start, stride):
    pos, h, types, charges, batch = known_molecules()
    oracle = gaussian_oracle(pos, h, 0.0)
    gen = torch.Generator().manual_seed(1)
    start = sample_noise(pos, h, batch, len(SIZES), generator=gen)
    ancestral = sample(Ancestral(stride), oracle, OneHotDecoder(NORMALIZER), *start, batch, t_start, generator=gen)
    ddim = sample(DDIM(stride), oracle, OneHotDecoder(NORMALIZER), *start, batch, t_start)
    for out in (ancestral, ddim):
        assert torch.equal(out.atom_types, types) and torch.equal(out.charges, charges)
    # ancestral ends with EDM's sigma_0 / alpha_0 = 3.2e-3 A of noise per entry; DDIM (eta = 0) is exact
    assert (ancestral.pos - pos).abs().max() < 0.02 and (ancestral.pos - pos).abs().max() > 1e-4
    assert (ddim.pos - pos).abs().max() < 1e-5


def expected_variance(data_variance, t_start, stride, deterministic):
    """Per-entry variance after sampling N(0, v) data, from Ho et al.'s alpha_bar formulas (float64)."""
    alpha_bar = SCHEDULE.alpha_bar()

    def shrink(a):  # E[x | z] = shrink * z for data N(0, v) and z ~ sqrt(a) x + sqrt(1 - a) eps
        return np.sqrt(a) * data_variance / (a * data_variance + 1 - a)

    a_t = alpha_bar[t_start]
    var = a_t * data_variance + 1 - a_t  # the start state is the exact marginal
    for t in range(t_start, 0, -stride):
        a_t, a_s = alpha_bar[t], alpha_bar[t - stride]
        if deterministic:  # DDIM: z_s = sqrt(a_s) x_hat + sqrt(1 - a_s) eps_hat
            gain = np.sqrt(a_s) * shrink(a_t) + np.sqrt((1 - a_s) / (1 - a_t)) * (1 - np.sqrt(a_t) * shrink(a_t))
            noise = 0.0
        else:  # posterior q(z_s | z_t, x_hat): mean coefficients and variance
            gain = np.sqrt(a_s) * (1 - a_t / a_s) / (1 - a_t) * shrink(a_t)
            gain += np.sqrt(a_t / a_s) * (1 - a_s) / (1 - a_t)
            noise = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        var = gain**2 * var + noise
    decode_noise = 0.0 if deterministic else (1 - alpha_bar[0]) / alpha_bar[0]
    return shrink(alpha_bar[0]) ** 2 * var + decode_noise  # x = E[x | z_0] + sigma_0 / alpha_0 * noise


@pytest.mark.parametrize("t_start, stride", [(1000, 10), (550, 5)])  # stride 1: see the recovery test
@pytest.mark.parametrize("sampler", [Ancestral, DDIM])
def test_samplers_reproduce_gaussian_data(sampler, t_start, stride):
    """GAGA's setting: start at t_start from the closed-form marginal N(0, alpha_bar v + 1 - alpha_bar)."""
    num_molecules, num_atoms, variance = 1500, 4, 2.0
    batch = torch.arange(num_molecules).repeat_interleave(num_atoms)
    zeros = torch.zeros(len(batch), 3, dtype=torch.float64), torch.zeros(len(batch), 5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    alpha_bar = SCHEDULE.alpha_bar()[t_start]
    scale = np.sqrt(alpha_bar * variance + 1 - alpha_bar)
    pos, h = (scale * z for z in sample_noise(*zeros, batch, num_molecules, generator=gen))
    oracle = gaussian_oracle(0.0, 0.0, variance)
    out = sample(sampler(stride), oracle, OneHotDecoder(Normalizer()), pos, h, batch, t_start, generator=gen)
    expected = expected_variance(variance, t_start, stride, sampler is DDIM) * (num_atoms - 1) / num_atoms
    assert out.pos.var().item() == pytest.approx(expected, rel=0.03)
    assert expected == pytest.approx(variance * (num_atoms - 1) / num_atoms, rel=0.06)  # close to the data

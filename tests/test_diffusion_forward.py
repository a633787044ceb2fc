"""Tests of the schedule anchors and EDM's forward process: zero-CoM projection, noise, z_t, normalisation.

Oracles: docs/references.md's gamma values, numpy per-molecule means, and the variance of a projected Gaussian.
"""

import numpy as np
import pytest
import torch

from gaga.diffusion.forward import Normalizer, diffuse, remove_mean, sample_noise
from gaga.diffusion.schedules import NoiseSchedule


def test_polynomial_2_schedule_matches_edm_anchors():
    schedule = NoiseSchedule("polynomial_2", timesteps=1000, precision=1e-5)
    gamma = schedule.gamma_table.numpy()
    assert gamma[0] == pytest.approx(-11.51291546, abs=1e-6)
    assert gamma[1000] == pytest.approx(11.51251595, abs=1e-6)
    steps = torch.arange(1001)
    torch.testing.assert_close(schedule.alpha2(steps) + schedule.sigma2(steps), torch.ones(1001))


def test_remove_mean_matches_numpy_per_molecule_means():
    sizes = np.array([4, 1, 6])
    x = np.random.default_rng(0).normal(size=(sizes.sum(), 3))
    batch = torch.repeat_interleave(torch.arange(3), torch.from_numpy(sizes))
    centred = remove_mean(torch.from_numpy(x), batch).numpy()
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        np.testing.assert_allclose(centred[lo:hi], x[lo:hi] - x[lo:hi].mean(axis=0), atol=1e-12)


@pytest.mark.parametrize("zero_mean_features", [False, True])
def test_noise_is_projected_and_has_the_projected_variance(zero_mean_features):
    num_atoms, num_molecules = 5, 4000
    batch = torch.arange(num_molecules).repeat_interleave(num_atoms)
    pos, h = torch.zeros(len(batch), 3), torch.zeros(len(batch), 6)
    gen = torch.Generator().manual_seed(0)
    eps_pos, eps_h = sample_noise(pos, h, batch, num_molecules, zero_mean_features, gen)
    assert remove_mean(eps_pos, batch).sub(eps_pos).abs().max() < 1e-6
    # projecting iid N(0, 1) onto zero mean leaves variance (N - 1) / N per entry
    assert eps_pos.var().item() == pytest.approx((num_atoms - 1) / num_atoms, rel=0.03)
    expected_h = (num_atoms - 1) / num_atoms if zero_mean_features else 1.0
    assert eps_h.var().item() == pytest.approx(expected_h, rel=0.03)
    assert (remove_mean(eps_h, batch).sub(eps_h).abs().max() < 1e-6) == zero_mean_features


@pytest.mark.parametrize("step", [0, 100, 550, 1000])
def test_forward_process_variance_on_real_qm9_coordinates(qm9_sample, step):
    """Var z_t = alpha_t^2 E[x^2] + sigma_t^2 E[(N - 1) / N] per coordinate entry, on 3,000 real molecules."""
    counts = torch.from_numpy(qm9_sample.num_atoms)
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    pos = remove_mean(torch.from_numpy(qm9_sample.positions).double(), batch)
    h = torch.zeros(len(batch), 1, dtype=torch.float64)
    schedule = NoiseSchedule()
    t = torch.full((len(counts),), step)
    pos_t, _, eps_pos, _ = diffuse(pos, h, t, schedule, batch, generator=torch.Generator().manual_seed(1))
    alpha2 = float(schedule.alpha_bar()[step])
    projected_noise_var = float(((counts - 1) / counts)[batch].double().mean())
    expected = alpha2 * float((pos**2).mean()) + (1 - alpha2) * projected_noise_var
    assert float((pos_t**2).mean()) == pytest.approx(expected, rel=0.02)
    assert remove_mean(pos_t, batch).sub(pos_t).abs().max() < 1e-9  # z_t keeps zero centre of mass
    if step == 1000:  # fully noised: nothing of the data is left
        assert float((pos_t**2).mean()) == pytest.approx(projected_noise_var, rel=0.02)


def test_normalizer_round_trip_and_edm_layout():
    normalizer = Normalizer.from_edm([1, 4, 10], include_charges=True)
    pos = torch.randn(3, 3)
    onehot = torch.eye(5)[[0, 3, 1]]
    charges = torch.tensor([1, 8, 6])
    scaled_pos, h = normalizer.encode(pos, onehot, charges)
    assert h.shape == (3, normalizer.num_features(5)) == (3, 6)
    torch.testing.assert_close(h[:, :5], onehot / 4)
    torch.testing.assert_close(h[:, 5], charges / 10.0)
    onehot_back, charges_back = normalizer.split(h)
    torch.testing.assert_close(onehot_back, onehot)
    torch.testing.assert_close(charges_back, charges.float())
    torch.testing.assert_close(scaled_pos, pos)


def test_normalizer_errors_and_edm_scale_guard():
    schedule = NoiseSchedule()  # sigma_0 = 3.2e-3, so 8 sigma_0 = 0.025
    Normalizer(charge_scale=10).check_against(schedule)  # EDM's [1, 4, 10] is accepted
    with pytest.raises(ValueError, match="too large"):
        Normalizer(charge_scale=100).check_against(schedule)
    with pytest.raises(ValueError, match="charges"):
        Normalizer(include_charges=True).encode(torch.zeros(2, 3), torch.eye(2))
    with pytest.raises(ValueError, match="zero CoM"):
        Normalizer.from_edm([1, 4, 10], [0.5, 0, 0])
    assert Normalizer(position_scale=2.0).log_volume_change(torch.tensor([4])).item() == pytest.approx(-9 * np.log(2.0))

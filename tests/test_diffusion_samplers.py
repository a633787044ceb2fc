"""Tests of the samplers' bookkeeping: evaluation counts and times with stride, zero CoM, DDIM's eta limits.

The quality of the samples against exact denoisers is tested in test_diffusion_oracle.py.
"""

import pytest
import torch

from gaga.diffusion.forward import Normalizer, remove_mean, sample_noise
from gaga.diffusion.samplers import OneHotDecoder, ancestral_sample, ddim_sample
from gaga.diffusion.schedules import NoiseSchedule
from gaga.nn import EGNNDynamics

SCHEDULE = NoiseSchedule()
SIZES = [4, 7, 2]
BATCH = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))


class RecordingDenoiser:
    """Predicts a deliberately off-centre noise and records the times and features it was called with."""

    def __init__(self):
        self.times, self.features = [], []

    def __call__(self, pos, h, t, batch):
        self.times.append(t.clone())
        self.features.append(h.clone())
        return 0.1 * pos + 1.0, 0.1 * h + 0.5


def start_state(seed=0, num_features=5):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(len(BATCH), 3, generator=gen) + 3.0  # off-centre on purpose
    return pos, torch.randn(len(BATCH), num_features, generator=gen)


@pytest.mark.parametrize("sampler", [ancestral_sample, ddim_sample])
@pytest.mark.parametrize("t_start, stride", [(1000, 1), (550, 1), (550, 2), (550, 11), (1000, 25)])
def test_network_evaluations_follow_the_strided_grid(sampler, t_start, stride):
    net = RecordingDenoiser()
    out = sampler(
        net, SCHEDULE, OneHotDecoder(Normalizer()), *start_state(), BATCH, len(SIZES), t_start=t_start, stride=stride
    )
    steps = list(range(t_start, 0, -stride)) + [0]  # the transitions, then EDM's final p(x, h | z_0)
    assert out.num_evaluations == len(net.times) == t_start // stride + 1
    assert [round(float(t[0]) * 1000) for t in net.times] == steps
    assert all(t.shape == (len(SIZES),) and bool((t == t[0]).all()) for t in net.times)


@pytest.mark.parametrize("zero_mean_features", [False, True])
@pytest.mark.parametrize("sampler", [ancestral_sample, ddim_sample])
def test_samplers_keep_zero_centre_of_mass(sampler, zero_mean_features):
    net = RecordingDenoiser()
    out = sampler(
        net,
        SCHEDULE,
        OneHotDecoder(Normalizer()),
        *start_state(),
        BATCH,
        len(SIZES),
        t_start=100,
        stride=4,
        zero_mean_features=zero_mean_features,
    )
    assert remove_mean(out.pos, BATCH).sub(out.pos).abs().max() < 1e-5
    centred = [remove_mean(h, BATCH).sub(h).abs().max() < 1e-5 for h in net.features]
    assert all(centred) if zero_mean_features else not any(centred)


def test_ddim_with_eta_one_is_the_ancestral_sampler():
    torch.manual_seed(0)
    net = EGNNDynamics(6, hidden_nf=16, n_layers=2).eval()
    decode = OneHotDecoder(Normalizer(include_charges=True))
    pos, h = start_state(num_features=6)
    ancestral = ancestral_sample(
        net, SCHEDULE, decode, pos, h, BATCH, len(SIZES), stride=50, generator=torch.Generator().manual_seed(5)
    )
    ddim = ddim_sample(
        net,
        SCHEDULE,
        decode,
        pos,
        h,
        BATCH,
        len(SIZES),
        stride=50,
        eta=1.0,
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(ddim.pos, ancestral.pos, atol=1e-4, rtol=1e-4)
    assert torch.equal(ddim.atom_types, ancestral.atom_types) and torch.equal(ddim.charges, ancestral.charges)


def test_ddim_with_eta_zero_is_deterministic():
    torch.manual_seed(0)
    net = EGNNDynamics(5, hidden_nf=16, n_layers=2).eval()
    pos, h = sample_noise(*start_state(), BATCH, len(SIZES))
    first, second = (
        ddim_sample(
            net,
            SCHEDULE,
            OneHotDecoder(Normalizer()),
            pos,
            h,
            BATCH,
            len(SIZES),
            stride=100,
            generator=torch.Generator().manual_seed(seed),
        )
        for seed in (1, 2)
    )
    assert torch.equal(first.pos, second.pos) and first.charges is None


def test_invalid_start_or_stride_is_rejected_with_the_fix():
    net = RecordingDenoiser()
    with pytest.raises(ValueError, match="divisor of t_start=550"):
        ancestral_sample(
            net, SCHEDULE, OneHotDecoder(Normalizer()), *start_state(), BATCH, len(SIZES), t_start=550, stride=4
        )
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        ddim_sample(net, SCHEDULE, OneHotDecoder(Normalizer()), *start_state(), BATCH, len(SIZES), t_start=1200)
    assert not net.times

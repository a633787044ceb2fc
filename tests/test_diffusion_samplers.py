"""Tests of the samplers' bookkeeping: evaluation counts and times with stride, zero CoM, DDIM's eta limits, the one
check of start and stride, and the options each sampler refuses.

The quality of the samples against exact denoisers is tested in test_diffusion_oracle.py.
"""

import pytest
import torch

from gaga.diffusion.decoding import OneHotDecoder
from gaga.diffusion.flow_path import LinearPath
from gaga.diffusion.forward import Normalizer, remove_mean, sample_noise
from gaga.diffusion.samplers import DDIM, Adaptive, Ancestral, Chain, Euler, Heun, make_sampler, run
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


def sample(
    sampler, net, pos, h, start_step=1000, decode=None, zero_mean_features=False, generator=None, schedule=SCHEDULE
):
    """`sampler` from (pos, h) at `start_step` on BATCH, decoded as one-hot atoms unless `decode` says otherwise."""
    chain = Chain(net, schedule, BATCH, zero_mean_features, generator)
    steps = sampler.steps(start_step, schedule.timesteps)
    return run(sampler, chain, decode or OneHotDecoder(Normalizer()), pos, h, steps)


def start_state(seed=0, num_features=5):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(len(BATCH), 3, generator=gen) + 3.0  # off-centre on purpose
    return pos, torch.randn(len(BATCH), num_features, generator=gen)


@pytest.mark.parametrize("sampler", [Ancestral, DDIM])
@pytest.mark.parametrize("t_start, stride", [(1000, 1), (550, 1), (550, 2), (550, 11), (1000, 25)])
def test_network_evaluations_follow_the_strided_grid(sampler, t_start, stride):
    net = RecordingDenoiser()
    out = sample(sampler(stride=stride), net, *start_state(), start_step=t_start)
    steps = list(range(t_start, 0, -stride)) + [0]  # the transitions, then EDM's final p(x, h | z_0)
    assert out.num_evaluations == len(net.times) == t_start // stride + 1
    assert [round(float(t[0]) * 1000) for t in net.times] == steps
    assert all(t.shape == (len(SIZES),) and bool((t == t[0]).all()) for t in net.times)


@pytest.mark.parametrize("zero_mean_features", [False, True])
@pytest.mark.parametrize("sampler", [Ancestral, DDIM])
def test_samplers_keep_zero_centre_of_mass(sampler, zero_mean_features):
    net = RecordingDenoiser()
    out = sample(sampler(stride=4), net, *start_state(), start_step=100, zero_mean_features=zero_mean_features)
    assert remove_mean(out.pos, BATCH).sub(out.pos).abs().max() < 1e-5
    centred = [remove_mean(h, BATCH).sub(h).abs().max() < 1e-5 for h in net.features]
    assert all(centred) if zero_mean_features else not any(centred)


def test_ddim_with_eta_one_is_the_ancestral_sampler():
    torch.manual_seed(0)
    net = EGNNDynamics(6, hidden_nf=16, n_layers=2).eval()
    decode = OneHotDecoder(Normalizer(include_charges=True))
    pos, h = start_state(num_features=6)
    ancestral = sample(Ancestral(stride=50), net, pos, h, decode=decode, generator=torch.Generator().manual_seed(5))
    ddim = sample(DDIM(stride=50, eta=1.0), net, pos, h, decode=decode, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ddim.pos, ancestral.pos, atol=1e-4, rtol=1e-4)
    assert torch.equal(ddim.atom_types, ancestral.atom_types) and torch.equal(ddim.charges, ancestral.charges)


def test_ddim_with_eta_zero_is_deterministic():
    torch.manual_seed(0)
    net = EGNNDynamics(5, hidden_nf=16, n_layers=2).eval()
    pos, h = sample_noise(*start_state(), BATCH, len(SIZES))
    first, second = (
        sample(DDIM(stride=100), net, pos, h, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)
    )
    assert torch.equal(first.pos, second.pos) and first.charges is None


@pytest.mark.parametrize("sampler", [Ancestral(stride=4), DDIM(stride=4), Euler(stride=4), Heun(stride=4)])
def test_start_and_stride_are_checked_once_by_the_grid_with_the_fix(sampler):
    assert sampler.steps(12, 1000) == [12, 8, 4, 0] and Adaptive().steps(3, 1000) == [3, 2, 1, 0]
    with pytest.raises(
        ValueError, match=r"stride=4 must be a positive divisor of the start step 550 \(e\.g\. 1, 2, 5, 10\)"
    ):
        sampler.steps(550, 1000)
    for start_step in (0, 1200):
        with pytest.raises(ValueError, match=rf"start={start_step}: sampling starts at a step in 1\.\.1000"):
            sampler.steps(start_step, 1000)


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("sampler", [Ancestral(stride=5), Heun(stride=5), Adaptive()])
def test_the_loop_reports_progress_and_frames_on_the_grid(sampler, keep):
    """on_step gets the grid steps each transition covered (dopri5 without frames: the whole span at once);
    keep_frame the start state and every grid step's state."""
    if isinstance(sampler, Adaptive):
        pytest.importorskip("torchdiffeq")
    schedule = SCHEDULE if isinstance(sampler, Ancestral) else LinearPath(1000)
    net, frames, covered = RecordingDenoiser(), [], []
    steps = sampler.steps(20, 1000)
    keep_frame = (lambda step, pos, h: frames.append(step)) if keep else None
    run(sampler, Chain(net, schedule, BATCH), lambda final: final, *start_state(), steps, covered.append, keep_frame)
    assert frames == (steps if keep else [])
    assert covered == ([20] if isinstance(sampler, Adaptive) and not keep else [1] * (len(steps) - 1))


@pytest.mark.parametrize(
    "sampler, evaluations",
    [
        (Ancestral(stride=5), 60 // 5 + 1),
        (DDIM(stride=3), 60 // 3 + 1),
        (Euler(stride=5), 60 // 5),
        (Heun(stride=3), 2 * 60 // 3),
    ],
)
def test_the_loop_counts_network_evaluations(sampler, evaluations):
    """Diffusion: one per transition and EDM's final p(x, h | z_0); Euler one and Heun two per step."""
    net = RecordingDenoiser()
    schedule = SCHEDULE if isinstance(sampler, (Ancestral, DDIM)) else LinearPath(1000)
    out = sample(sampler, net, *start_state(), start_step=60, decode=lambda final: final, schedule=schedule)
    assert out.num_evaluations == len(net.times) == evaluations


VP, FLOW = (Ancestral, DDIM), (Adaptive, Euler, Heun)


@pytest.mark.parametrize(
    "choices, options, message",
    [
        (
            VP,
            {"name": "ancestral", "eta": 0.5},
            r"eta=0.5: sampler=ancestral does not use it \(only ddim of b does\); leave it at 0.0",
        ),
        (FLOW, {"name": "euler", "eta": 0.5}, r"eta=0.5: sampler=euler does not use it \(only no sampler of b does\)"),
        (FLOW, {"name": "heun", "eta": 0.1}, r"eta=0.1: sampler=heun does not use it"),
        (
            FLOW,
            {"name": "adaptive", "stride": 2},
            r"stride=2: sampler=adaptive does not use it \(only euler, heun of b",
        ),
        (FLOW, {"name": "auto", "stride": 2}, r"stride=2: sampler=adaptive .* leave it at 1$"),
        (FLOW, {"name": "ddim"}, r"unknown sampler 'ddim' for b: use one of \['adaptive', 'euler', 'heun'\]"),
    ],
)
def test_each_sampler_refuses_an_option_it_does_not_use(choices, options, message):
    with pytest.raises(ValueError, match=message):
        make_sampler(backbone="b", choices=choices, **options)


def test_make_sampler_passes_the_options_and_settings_a_sampler_has():
    assert make_sampler("auto", VP, "b") == Ancestral()
    assert make_sampler("ddim", VP, "b", stride=5, eta=0.5) == DDIM(stride=5, eta=0.5)
    assert make_sampler("heun", FLOW, "b", stride=4, rtol=1e-3, atol=1e-3) == Heun(stride=4)
    assert make_sampler("auto", FLOW, "b", rtol=1e-3, atol=1e-5) == Adaptive(rtol=1e-3, atol=1e-5)

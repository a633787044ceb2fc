"""Reverse-time samplers as small objects, in the style of diffusers' schedulers, and the one loop that runs them.

A sampler holds the options it uses and knows its grid of steps from a start step down to 0 (`steps`: the one
check of start and stride) and its transitions: on EDM's variance-preserving chain `Ancestral` (p(z_s | z_t)) and
`DDIM`; on a flow path's ODE `Euler` and `Heun` on the strided grid and `Adaptive` (torchdiffeq's dopri5 over the
whole span, EquiFM's sampler). `make_sampler` builds one from sample.py's options, refusing an option it does not
use. `run` projects the start state (GAGA: at T*, drawn from the closed-form Gaussian), steps down to 0 and hands
the final state to the backbone's decoder (EDM: argmax of the one-hot; GeoLDM: its autoencoder's decoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import torch
from torch.nn import functional as F

from gaga.diffusion.decoding import Decoder, FinalState, SamplerOutput
from gaga.diffusion.flow_matching import DEFAULT_TOLERANCE, require_odeint
from gaga.diffusion.flow_path import FlowPath
from gaga.diffusion.forward import project_state, sample_noise
from gaga.diffusion.losses import Denoiser
from gaga.diffusion.schedules import NoiseSchedule

# receives (step, pos, h) of the whole batch, in diffusion space; what it keeps it must copy
FrameCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
# sample.py's sampler options and their defaults (an option left at its default is not set)
OPTION_DEFAULTS = {"stride": 1, "eta": 0.0}


@dataclass
class Chain:
    """What every step needs: the network at a step of the grid, the batch layout and the projection rules.

    `network` is called like a denoiser, (pos, h, t [B], batch) with t = step / T in [0, 1]: a diffusion's noise
    prediction, or a flow's velocity field (`FlowPath.field`). `schedule` gives T (`timesteps`) and, to the
    diffusion samplers, gamma, alpha and sigma. The chain counts the network's evaluations.
    """

    network: Denoiser
    schedule: NoiseSchedule | FlowPath
    batch: torch.Tensor
    zero_mean_features: bool = False
    generator: torch.Generator | None = None
    num_evaluations: int = 0
    num_graphs: int = field(init=False)

    def __post_init__(self):
        self.num_graphs = int(self.batch.max()) + 1

    @property
    def timesteps(self) -> int:
        return self.schedule.timesteps

    def evaluate(self, pos, h, time: torch.Tensor):
        """The network at times `time` [B], counted."""
        self.num_evaluations += 1
        return self.network(pos, h, time, self.batch)

    def at_step(self, pos, h, step: int):
        """The network at grid step `step` (t = step / T)."""
        return self.evaluate(pos, h, torch.full((self.num_graphs,), step / self.timesteps, device=pos.device))

    def noise(self, pos, h):
        return sample_noise(pos, h, self.batch, self.num_graphs, self.zero_mean_features, self.generator)

    def project(self, pos, h):
        """Zero CoM per molecule; the features too with `zero_mean_features` (as the GAGA reference code does)."""
        return project_state(pos, h, self.batch, self.num_graphs, self.zero_mean_features)


class Sampler:
    """A sampler: the options it uses (a frozen dataclass's fields), its grid of steps and its transitions.

    A subclass sets `name` and implements `step` (one transition t -> s on the grid) and `final_state` (what the
    backbone's decoder reads at step 0), or `trajectory` for a solver that picks its own steps.
    """

    name = ""
    stride = 1  # the grid's spacing in steps; a sampler that takes the option has it as a field

    def steps(self, start_step: int, timesteps: int) -> list[int]:
        """The grid start_step, start_step - stride, ..., 0; ValueError naming the setting when a model with T =
        `timesteps` cannot be sampled from `start_step` with this stride."""
        if not 1 <= start_step <= timesteps:
            raise ValueError(
                f"start={start_step}: sampling starts at a step in 1..{timesteps} (the model's T); use start=auto "
                "(T* with GAGA), start=T or a step in that range"
            )
        if self.stride < 1 or start_step % self.stride:
            divisors = [d for d in range(2, min(start_step, 10) + 1) if start_step % d == 0]
            raise ValueError(
                f"stride={self.stride} must be a positive divisor of the start step {start_step} (e.g. 1"
                + "".join(f", {d}" for d in divisors)
                + ")"
            )
        return list(range(start_step, -1, -self.stride))

    def trajectory(self, chain: Chain, pos, h, steps: list[int], every_step: bool) -> Iterator:
        """(step, pos, h) after each transition along the grid `steps`; `every_step`: whether the caller wants the
        state at every step of the grid (a solver with its own steps otherwise gives the last one only)."""
        for t, s in zip(steps[:-1], steps[1:], strict=True):
            pos, h = self.step(chain, pos, h, s, t)
            yield s, pos, h

    def step(self, chain: Chain, pos, h, s: int, t: int):
        """The state at step s < t from the state (pos, h) at step t."""
        raise NotImplementedError

    def final_state(self, chain: Chain, pos, h) -> FinalState:
        raise NotImplementedError


class _Diffusion(Sampler):
    """A sampler of EDM's variance-preserving chain. Its final state is EDM's p(x, h | z_0): one more denoiser call
    at t = 0, and decoding noise of scale `decode_noise`."""

    decode_noise = 1.0

    @staticmethod
    def coefficients(chain: Chain, t: int):
        """(gamma, alpha, sigma) at integer step t as 0-d tensors."""
        step = torch.tensor(t, device=chain.batch.device)
        return chain.schedule.gamma(step), chain.schedule.alpha(step), chain.schedule.sigma(step)

    def final_state(self, chain: Chain, pos, h) -> FinalState:
        _, alpha_0, sigma_0 = self.coefficients(chain, 0)
        eps_pos, eps_h = chain.at_step(pos, h, 0)
        return FinalState(
            pos,
            h,
            eps_pos,
            eps_h,
            alpha_0,
            sigma_0,
            self.decode_noise,
            chain.batch,
            chain.num_graphs,
            chain.num_evaluations,
            chain.generator,
        )


@dataclass(frozen=True)
class Ancestral(_Diffusion):
    """EDM's ancestral sampler with steps t -> t - stride: start_step / stride + 1 denoiser evaluations."""

    name = "ancestral"
    stride: int = 1

    def step(self, chain: Chain, pos, h, s: int, t: int):
        """EDM's p(z_s | z_t): the Gaussian posterior q(z_s | z_t, x = x_hat(z_t)), any s < t."""
        gamma_s, _, sigma_s = self.coefficients(chain, s)
        gamma_t, _, sigma_t = self.coefficients(chain, t)
        sigma2_t_given_s = -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))
        alpha_t_given_s = torch.exp(0.5 * (F.logsigmoid(-gamma_t) - F.logsigmoid(-gamma_s)))
        eps_pos, eps_h = chain.at_step(pos, h, t)
        scale = sigma2_t_given_s / alpha_t_given_s / sigma_t
        std = torch.sqrt(sigma2_t_given_s) * sigma_s / sigma_t
        noise_pos, noise_h = chain.noise(pos, h)
        return chain.project(
            pos / alpha_t_given_s - scale * eps_pos + std * noise_pos,
            h / alpha_t_given_s - scale * eps_h + std * noise_h,
        )


@dataclass(frozen=True)
class DDIM(_Diffusion):
    """DDIM (Song et al. 2021) with steps t -> t - stride; eta = 0 is fully deterministic, eta = 1 the ancestral
    sampler. Same evaluation count as `Ancestral`; the decoding noise is scaled by eta."""

    name = "ddim"
    stride: int = 1
    eta: float = 0.0

    @property
    def decode_noise(self) -> float:
        return self.eta

    def step(self, chain: Chain, pos, h, s: int, t: int):
        """z_s = alpha_s x_hat + sqrt(sigma_s^2 - c^2) eps_hat + c * noise, c = eta * sigma_{t|s} sigma_s / sigma_t."""
        gamma_s, alpha_s, sigma_s = self.coefficients(chain, s)
        gamma_t, alpha_t, sigma_t = self.coefficients(chain, t)
        sigma2_t_given_s = -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))
        c = self.eta * torch.sqrt(sigma2_t_given_s) * sigma_s / sigma_t
        eps_pos, eps_h = chain.at_step(pos, h, t)
        direction = torch.sqrt(torch.clamp(sigma_s**2 - c**2, min=0.0))
        noise_pos, noise_h = chain.noise(pos, h)

        def update(z, eps, noise):
            return alpha_s * (z - sigma_t * eps) / alpha_t + direction * eps + c * noise

        return chain.project(update(pos, eps_pos, noise_pos), update(h, eps_h, noise_h))


class _ODE(Sampler):
    """A sampler of a flow's ODE dz/dt = v, integrated from t = start_step / T down to 0: its end point is the data
    (no network call, no noise at t = 0)."""

    def final_state(self, chain: Chain, pos, h) -> FinalState:
        return FinalState.noise_free(pos, h, chain.batch, chain.num_evaluations)


@dataclass(frozen=True)
class Euler(_ODE):
    """Euler steps t -> t - stride on the grid: start_step / stride velocity evaluations."""

    name = "euler"
    stride: int = 1

    def step(self, chain: Chain, pos, h, s: int, t: int):
        dt = s / chain.timesteps - t / chain.timesteps
        v_pos, v_h = self.velocity(chain, pos, h, s, t, dt)
        return chain.project(pos + dt * v_pos, h + dt * v_h)

    def velocity(self, chain: Chain, pos, h, s: int, t: int, dt: float):
        return chain.at_step(pos, h, t)


@dataclass(frozen=True)
class Heun(Euler):
    """Heun's steps (Euler's prediction, then the mean of the velocities at both ends): 2 start_step / stride
    evaluations."""

    name = "heun"

    def velocity(self, chain: Chain, pos, h, s: int, t: int, dt: float):
        v_pos, v_h = chain.at_step(pos, h, t)
        w_pos, w_h = chain.at_step(*chain.project(pos + dt * v_pos, h + dt * v_h), s)
        return 0.5 * (v_pos + w_pos), 0.5 * (v_h + w_h)


@dataclass(frozen=True)
class Adaptive(_ODE):
    """torchdiffeq's adaptive dopri5 from start_step to 0 in one call (EquiFM's sampler: rtol = atol = 1e-4); the
    number of evaluations is its own. With `every_step`, the states at the grid's steps are dopri5's dense output
    there, the steps it takes unchanged."""

    name = "adaptive"
    rtol: float = DEFAULT_TOLERANCE
    atol: float = DEFAULT_TOLERANCE

    def trajectory(self, chain: Chain, pos, h, steps: list[int], every_step: bool) -> Iterator:
        odeint = require_odeint("sampler=adaptive")
        width = pos.shape[1]

        def field(t, state):
            pos_t, h_t = chain.project(state[:, :width], state[:, width:])
            v_pos, v_h = chain.evaluate(pos_t, h_t, t.expand(chain.num_graphs).to(state))
            return torch.cat([v_pos, v_h], dim=1)

        kept = steps if every_step else [steps[0], steps[-1]]
        span = torch.tensor([step / chain.timesteps for step in kept], dtype=pos.dtype, device=pos.device)
        states = odeint(field, torch.cat([pos, h], dim=1), span, method="dopri5", rtol=self.rtol, atol=self.atol)
        for step, state in zip(kept[1:], states[1:], strict=True):
            yield step, *chain.project(state[:, :width], state[:, width:])


def make_sampler(
    name: str, choices: tuple[type[Sampler], ...], backbone: str, stride: int = 1, eta: float = 0.0, **settings
) -> Sampler:
    """The sampler called `name` ("auto": the first of `choices`, a backbone's samplers) with sample.py's options;
    `settings`, the backbone's own (flow matching: rtol, atol), go to a sampler that has them. ValueError naming
    the fix for a name not in `choices` and for an option set that the sampler does not use."""
    by_name = {choice.name: choice for choice in choices}
    chosen = choices[0] if name == "auto" else by_name.get(name)
    if chosen is None:
        raise ValueError(f"unknown sampler {name!r} for {backbone}: use one of {list(by_name)}")
    options = {"stride": stride, "eta": eta}
    for option, value in options.items():
        default = OPTION_DEFAULTS[option]
        if value != default and option not in _fields(chosen):
            users = [choice.name for choice in choices if option in _fields(choice)]
            raise ValueError(
                f"{option}={value}: sampler={chosen.name} does not use it (only {', '.join(users) or 'no sampler'} "
                f"of {backbone} does); leave it at {default}"
            )
    given = {**settings, **options}
    return chosen(**{key: value for key, value in given.items() if key in _fields(chosen)})


def _fields(sampler: type[Sampler]) -> set[str]:
    return {entry.name for entry in fields(sampler)}


@torch.no_grad()
def run(
    sampler: Sampler,
    chain: Chain,
    decode: Decoder,
    pos: torch.Tensor,
    h: torch.Tensor,
    steps: list[int],
    on_step: Callable[[int], None] | None = None,
    keep_frame: FrameCallback | None = None,
) -> SamplerOutput:
    """`sampler` from state (pos, h) at steps[0] down the grid `steps` (`sampler.steps(start_step, T)`) to 0; its
    final state goes to `decode`.

    The start state is projected (`Chain.project`). `on_step` is called after every transition with the number of
    grid steps it covered (progress bars: 1, or an adaptive solve's whole span); `keep_frame`, when given, sees the
    start state and the state after every transition (a denoising chain's frames). The output counts the network's
    evaluations.
    """
    pos, h = chain.project(pos, h)
    previous = steps[0]
    if keep_frame is not None:
        keep_frame(previous, pos, h)
    states = sampler.trajectory(chain, pos, h, steps, every_step=keep_frame is not None)
    for step, pos, h in states:
        if on_step is not None:
            on_step((previous - step) // sampler.stride)
        if keep_frame is not None:
            keep_frame(step, pos, h)
        previous = step
    return decode(sampler.final_state(chain, pos, h))

"""Reverse-time samplers for EDM-style diffusion: ancestral p(z_s | z_t) and DDIM, with stride and any start.

Both run from step t_start (GAGA: T* with a closed-form Gaussian start state) down to 0 and hand the final
state to the backbone's decoder (EDM: argmax of the one-hot; GeoLDM: its autoencoder's decoder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch.nn import functional as F

from gaga.diffusion.forward import Normalizer, project_state, remove_mean, sample_noise, sample_zero_com_noise
from gaga.diffusion.losses import Denoiser
from gaga.diffusion.schedules import NoiseSchedule

# receives (step, pos, h) of the whole batch, in diffusion space; what it keeps it must copy
FrameCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class SamplerOutput:
    """Generated molecules as flat tensors, plus the number of denoiser calls it took."""

    pos: torch.Tensor  # [N, 3] in Angstrom, zero centre of mass per molecule
    atom_types: torch.Tensor  # [N] type index (argmax of the one-hot)
    charges: torch.Tensor | None  # [N] rounded charges, None without include_charges
    num_evaluations: int


@dataclass
class _Chain:
    """What every step needs: the batch layout and the projection rules."""

    denoiser: Denoiser
    schedule: NoiseSchedule
    batch: torch.Tensor
    num_graphs: int
    zero_mean_features: bool
    generator: torch.Generator | None
    on_step: Callable[[], None] | None = None  # called after every transition (progress bars)
    keep_frame: FrameCallback | None = None  # given (step, pos, h): the start state and the state after each transition
    num_evaluations: int = 0

    def predict_noise(self, pos, h, t: int):
        self.num_evaluations += 1
        time = torch.full((self.num_graphs,), t / self.schedule.timesteps, device=pos.device)
        return self.denoiser(pos, h, time, self.batch)

    def noise(self, pos, h):
        return sample_noise(pos, h, self.batch, self.num_graphs, self.zero_mean_features, self.generator)

    def project(self, pos, h):
        return project_state(pos, h, self.batch, self.num_graphs, self.zero_mean_features)

    def coefficients(self, t: int):
        """(gamma, alpha, sigma) at integer step t as 0-d tensors."""
        step = torch.tensor(t, device=self.batch.device)
        return self.schedule.gamma(step), self.schedule.alpha(step), self.schedule.sigma(step)


def _ancestral_step(chain: _Chain, pos, h, s: int, t: int):
    """EDM's p(z_s | z_t): the Gaussian posterior q(z_s | z_t, x = x_hat(z_t)), any s < t."""
    gamma_s, _, sigma_s = chain.coefficients(s)
    gamma_t, _, sigma_t = chain.coefficients(t)
    sigma2_t_given_s = -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))
    alpha_t_given_s = torch.exp(0.5 * (F.logsigmoid(-gamma_t) - F.logsigmoid(-gamma_s)))
    eps_pos, eps_h = chain.predict_noise(pos, h, t)
    scale = sigma2_t_given_s / alpha_t_given_s / sigma_t
    std = torch.sqrt(sigma2_t_given_s) * sigma_s / sigma_t
    noise_pos, noise_h = chain.noise(pos, h)
    return chain.project(
        pos / alpha_t_given_s - scale * eps_pos + std * noise_pos, h / alpha_t_given_s - scale * eps_h + std * noise_h
    )


def _ddim_step(chain: _Chain, pos, h, s: int, t: int, eta: float):
    """DDIM (Song et al. 2021): z_s = alpha_s x_hat + sqrt(sigma_s^2 - c^2) eps_hat + c * noise.

    c = eta * sigma_{t|s} sigma_s / sigma_t, so eta = 1 is the ancestral step and eta = 0 is deterministic.
    """
    gamma_s, alpha_s, sigma_s = chain.coefficients(s)
    gamma_t, alpha_t, sigma_t = chain.coefficients(t)
    sigma2_t_given_s = -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))
    c = eta * torch.sqrt(sigma2_t_given_s) * sigma_s / sigma_t
    eps_pos, eps_h = chain.predict_noise(pos, h, t)
    direction = torch.sqrt(torch.clamp(sigma_s**2 - c**2, min=0.0))
    noise_pos, noise_h = chain.noise(pos, h)

    def step(z, eps, noise):
        return alpha_s * (z - sigma_t * eps) / alpha_t + direction * eps + c * noise

    return chain.project(step(pos, eps_pos, noise_pos), step(h, eps_h, noise_h))


@dataclass
class FinalState:
    """The chain's last state z_0, the denoiser's noise prediction at t = 0 and what p(x, h | z_0) needs.

    `sample_data` draws from EDM's p(x | z_0) = N((z_0 - sigma_0 eps_hat) / alpha_0, (noise_scale sigma_0 /
    alpha_0)^2) for one block; a decoder calls it for the blocks it uses, positions first.
    """

    pos: torch.Tensor
    h: torch.Tensor
    eps_pos: torch.Tensor
    eps_h: torch.Tensor
    alpha_0: torch.Tensor
    sigma_0: torch.Tensor
    noise_scale: float
    batch: torch.Tensor
    num_graphs: int
    num_evaluations: int
    generator: torch.Generator | None

    @classmethod
    def noise_free(cls, pos: torch.Tensor, h: torch.Tensor, batch: torch.Tensor, num_evaluations: int) -> FinalState:
        """A state read as data as it is (alpha_0 = 1, sigma_0 = 0, no noise drawn): an ODE's end point, or a chain
        frame for pictures."""
        one, zero = torch.ones((), device=pos.device), torch.zeros((), device=pos.device)
        zeros = torch.zeros_like(pos), torch.zeros_like(h)
        return cls(pos, h, *zeros, one, zero, 0.0, batch, int(batch.max()) + 1, num_evaluations, None)

    def sample_data(self, z: torch.Tensor, eps: torch.Tensor, zero_mean: bool = True) -> torch.Tensor:
        """x ~ p(x | z_0) for the block (z, eps); `zero_mean` draws zero-CoM noise and projects x; with
        `noise_scale` 0, the mean, with no draw."""
        if self.noise_scale == 0.0:
            x = (z - self.sigma_0 * eps) / self.alpha_0
            return remove_mean(x, self.batch, self.num_graphs) if zero_mean else x
        if zero_mean:
            noise = sample_zero_com_noise(z, self.batch, self.num_graphs, self.generator)
        else:
            noise = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=self.generator)
        x = (z - self.sigma_0 * eps) / self.alpha_0 + self.noise_scale * (self.sigma_0 / self.alpha_0) * noise
        return remove_mean(x, self.batch, self.num_graphs) if zero_mean else x


Decoder = Callable[[FinalState], SamplerOutput]


@dataclass(frozen=True)
class OneHotDecoder:
    """EDM's p(x, h | z_0): x drawn from p(x | z_0) in Angstrom; atom types the argmax of z_0's one-hot columns.

    A known difference from EDM's released code, kept on purpose: without charges, EDM's `sample_p_xh_given_z0`
    slices `z0[:, :, n_dims:-1]` as if a charge column were last, so it drops the last atom type (QM9: F) and can
    never generate it. Here the argmax runs over every one-hot column.
    """

    normalizer: Normalizer

    def __call__(self, final: FinalState) -> SamplerOutput:
        x = final.sample_data(final.pos, final.eps_pos) * self.normalizer.position_scale
        onehot, charges = self.normalizer.split(final.h)
        return SamplerOutput(
            pos=x,
            atom_types=onehot.argmax(dim=1),
            charges=None if charges is None else torch.round(charges).long(),
            num_evaluations=final.num_evaluations,
        )


def _final_state(chain: _Chain, pos, h, noise_scale: float) -> FinalState:
    _, alpha_0, sigma_0 = chain.coefficients(0)
    eps_pos, eps_h = chain.predict_noise(pos, h, 0)
    return FinalState(
        pos,
        h,
        eps_pos,
        eps_h,
        alpha_0,
        sigma_0,
        noise_scale,
        chain.batch,
        chain.num_graphs,
        chain.num_evaluations,
        chain.generator,
    )


@torch.no_grad()
def _run(
    chain: _Chain,
    decode: Decoder,
    pos: torch.Tensor,
    h: torch.Tensor,
    t_start: int | None,
    stride: int,
    step: Callable,
    decode_noise: float,
) -> SamplerOutput:
    t_start = chain.schedule.timesteps if t_start is None else int(t_start)
    if not 1 <= t_start <= chain.schedule.timesteps:
        raise ValueError(f"t_start must lie in 1..{chain.schedule.timesteps} (the schedule's T), got {t_start}")
    if stride < 1 or t_start % stride:
        raise ValueError(f"stride must be a positive divisor of t_start={t_start}, got {stride}")
    pos, h = chain.project(pos, h)
    if chain.keep_frame is not None:
        chain.keep_frame(t_start, pos, h)
    for t in range(t_start, 0, -stride):
        pos, h = step(chain, pos, h, t - stride, t)
        if chain.on_step is not None:
            chain.on_step()
        if chain.keep_frame is not None:
            chain.keep_frame(t - stride, pos, h)
    return decode(_final_state(chain, pos, h, decode_noise))


def ancestral_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    decode: Decoder,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    t_start: int | None = None,
    stride: int = 1,
    zero_mean_features: bool = False,
    generator: torch.Generator | None = None,
    on_step: Callable[[], None] | None = None,
    keep_frame: FrameCallback | None = None,
) -> SamplerOutput:
    """EDM's ancestral sampler from state (pos, h) at step t_start (default T) with steps t -> t - stride.

    Makes t_start / stride transitions plus EDM's final p(x, h | z_0) call: t_start / stride + 1
    denoiser evaluations; `decode` turns the final state into molecules. The start state is projected to
    zero CoM (features too with
    `zero_mean_features`, as the GAGA reference code does at every step). `keep_frame`, when given, sees the
    start state and the state after every transition (a denoising chain's frames).
    """
    chain = _Chain(denoiser, schedule, batch, num_graphs, zero_mean_features, generator, on_step, keep_frame)
    return _run(chain, decode, pos, h, t_start, stride, _ancestral_step, decode_noise=1.0)


def ddim_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    decode: Decoder,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    t_start: int | None = None,
    stride: int = 1,
    eta: float = 0.0,
    zero_mean_features: bool = False,
    generator: torch.Generator | None = None,
    on_step: Callable[[], None] | None = None,
    keep_frame: FrameCallback | None = None,
) -> SamplerOutput:
    """DDIM from state (pos, h) at step t_start with steps t -> t - stride; eta = 0 is fully deterministic.

    Same evaluation count, decoding and `keep_frame` as `ancestral_sample` (the decoding noise is scaled by eta).
    """
    chain = _Chain(denoiser, schedule, batch, num_graphs, zero_mean_features, generator, on_step, keep_frame)
    return _run(chain, decode, pos, h, t_start, stride, partial(_ddim_step, eta=eta), decode_noise=eta)

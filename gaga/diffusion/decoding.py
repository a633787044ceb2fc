"""Decoding: the sampler's final state z_0 read as molecules, one path for every backbone and sampler.

`FinalState` is the chain's last state with what p(x, h | z_0) needs (EDM's t = 0 step: the denoiser's noise
prediction, alpha_0, sigma_0), or, `noise_free`, a state read as data as it is (an ODE's end point, a chain frame).
A backbone's decoder turns it into `SamplerOutput` (EDM and flow matching: `OneHotDecoder`; GeoLDM: its
autoencoder's decoder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gaga.diffusion.forward import Normalizer, remove_mean, sample_zero_com_noise


@dataclass
class SamplerOutput:
    """Generated molecules as flat tensors, plus the number of denoiser calls it took."""

    pos: torch.Tensor  # [N, 3] in Angstrom, zero centre of mass per molecule
    atom_types: torch.Tensor  # [N] type index (argmax of the one-hot)
    charges: torch.Tensor | None  # [N] rounded charges, None without include_charges
    num_evaluations: int


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

"""What the variance-preserving diffusion backbones (EDM, GeoLDM) share: EDM's l2 loss and NLL estimate on the
backbone's clean state, with GAGA's truncation and start Gaussian, and EDM's samplers (ancestral, DDIM).

Flow matching has its own objective and ODE samplers and does not inherit these.
"""

from __future__ import annotations

import math

import torch

from gaga.diffusion.losses import l2_loss, nll_estimate
from gaga.diffusion.samplers import DDIM, Ancestral
from gaga.models.base import DiffusionBackbone


class VPDiffusion(DiffusionBackbone):
    """A DiffusionBackbone on EDM's variance-preserving process; a subclass supplies `feature_nll` (its t = 0 term
    of the features) and `decode` besides the base interface."""

    # EDM's samplers; the first is the default
    samplers = (Ancestral, DDIM)

    def diffusion_loss(self, pos, h, batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM's l2 loss of the clean state (pos, h) per molecule, t ~ U{0..T*}, and the steps drawn; the t = 0
        term is the backbone's `feature_nll`."""
        return l2_loss(
            self.denoiser(self.batch_context(batch), use_ema=False),
            self.schedule,
            self.feature_nll,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            start_step=self.truncation.start_step,
            zero_mean_features=self.hparams.zero_mean_features,
            generator=generator,
        )

    def diffusion_nll(self, pos, h, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """EDM's NLL estimate of the clean state (pos, h) with the EMA denoiser (GAGA: prior at T*), by term."""
        return nll_estimate(
            self.denoiser(self.batch_context(batch), use_ema=True),
            self.schedule,
            self.normalizer,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            self.log_prob_num_atoms(batch),
            self.feature_nll,
            start=self.truncation.start_gaussian(),
            zero_mean_features=self.hparams.zero_mean_features,
            generator=generator,
        )


def split_by_step(loss: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """A per-molecule diffusion loss split by the step drawn: "l2" (t >= 1, the epsilon error) and "t0_nll" (t = 0,
    the reconstruction term -log p(x, h | z_0), on another scale: negative once the type bins are resolved).

    Each part is per molecule [B], NaN for the molecules that drew the other part (no host sync to select them);
    its mean over the batch is the part's `nanmean`, NaN when no molecule drew its steps.
    """
    return {"l2": loss.where(t > 0, math.nan), "t0_nll": loss.where(t == 0, math.nan)}

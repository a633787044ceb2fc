"""The EDM backbone: EGNN dynamics diffusing normalised atoms (coordinates, one-hot / 4) directly.

Thin by design: the math lives in gaga.diffusion and gaga.nn, the shared training machinery and GAGA's
truncation in gaga.models.base, EDM's loss, NLL and samplers in gaga.models.vp. EDM decodes atom types as the argmax
of the one-hot, and its t = 0 term is the discretised one-hot likelihood.
"""

from __future__ import annotations

import torch

from gaga.diffusion.decoding import FinalState, OneHotDecoder, SamplerOutput
from gaga.diffusion.forward import remove_mean
from gaga.diffusion.losses import OneHotLikelihood
from gaga.models.build import build
from gaga.models.gradient_guard import NonFiniteLossError
from gaga.models.vp import VPDiffusion, split_by_step

__all__ = ["EDM", "NonFiniteLossError"]


class EDM(VPDiffusion):
    """E(3)-equivariant diffusion (Hoogeboom et al. 2022) on PyG batches, with optional GAGA truncation.

    Every argument is plain data (dicts of `_target_` configs, numbers), so a checkpoint rebuilds the model
    from its hyperparameters alone, with no pickled objects.

    Args:
        net: config of the dynamics network; `num_features` is filled in from the data.
        schedule: config of the noise schedule (`gaga.diffusion.schedules.NoiseSchedule`).
        dataset: `{name, atom_symbols, num_atoms_hist}` from the training split's statistics.
        **settings: the settings every backbone takes (`gaga.models.base.SHARED_SETTINGS`).
    """

    backbone_name = "edm"

    def __init__(
        self,
        net: dict,
        schedule: dict,
        dataset: dict,
        **settings,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.apply_settings()
        self.num_atom_types = len(dataset["atom_symbols"])
        self.schedule = build(schedule)
        self.normalizer.check_against(self.schedule)
        self.net = self.build_denoiser(net, self.normalizer.num_features(self.num_atom_types))
        self.feature_nll = OneHotLikelihood(self.normalizer)
        self.finish_setup()

    def diffusion_state(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """PyG batch -> normalised (pos zero-CoM, h); h zero-meaned per molecule too with `zero_mean_features`.

        Zero-meaned features keep their argmax (decoding is unchanged) and give GAGA's closed form mu_t = 0;
        the NLL's p(h | z_0) term then scores the shifted one-hot, so it is approximate in that setting.
        """
        pos, h = self.normalised_atoms(batch)
        if self.hparams.zero_mean_features:
            h = remove_mean(h, batch.batch, batch.num_graphs)
        return pos, h

    def training_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pos, h = self.diffusion_state(batch)
        loss, t = self.diffusion_loss(pos, h, batch, generator)
        return {"loss": loss, **split_by_step(loss, t)}

    def nll_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pos, h = self.diffusion_state(batch)
        return self.diffusion_nll(pos, h, batch, generator)

    def decode(self, final: FinalState, use_ema: bool = True, context: torch.Tensor | None = None) -> SamplerOutput:
        return OneHotDecoder(self.normalizer)(final)

"""The EDM backbone: EGNN dynamics diffusing normalised atoms (coordinates, one-hot / 4) directly.

Thin by design: the math lives in gaga.diffusion and gaga.nn, the shared training machinery and GAGA's
truncation in gaga.models.base. EDM decodes atom types as the argmax of the one-hot, and its t = 0 term is
the discretised one-hot likelihood.
"""

from __future__ import annotations

import torch

from gaga.diffusion.forward import Normalizer, remove_mean
from gaga.diffusion.losses import OneHotLikelihood, l2_loss, nll_estimate
from gaga.diffusion.samplers import FinalState, OneHotDecoder, SamplerOutput
from gaga.models.base import DiffusionBackbone, NonFiniteLossError, split_by_step
from gaga.models.build import build

__all__ = ["EDM", "NonFiniteLossError"]


class EDM(DiffusionBackbone):
    """E(3)-equivariant diffusion (Hoogeboom et al. 2022) on PyG batches, with optional GAGA truncation.

    Every argument is plain data (dicts of `_target_` configs, numbers), so a checkpoint rebuilds the model
    from its hyperparameters alone, with no pickled objects.

    Args:
        net: config of the dynamics network; `num_features` is filled in from the data.
        schedule: config of the noise schedule (`gaga.diffusion.schedules.NoiseSchedule`).
        dataset: `{name, atom_symbols, num_atoms_hist}` from the training split's statistics.
        normalizer: `{norm_values: [1, 4, 10], include_charges: false}` (EDM's normalize_factors).
        optimizer: optimiser config (`_target_` + settings; AdamW with EDM's settings by default).
        ema_decay: decay of the EMA weights used for validation, sampling and checkpoints' `ema_net` (0 = off).
        adaptive_clipping: EDM's gradient clipping at 1.5 x mean + 2 x std of the last 50 gradient norms.
        max_consecutive_nonfinite: stop after this many skipped steps in a row.
        zero_mean_features: zero-mean the atom features (data and noise) per molecule, as the GAGA reference code does.
        gaga: `{t_star, v_hat: {pos, h}}` when trained with truncation (set by the GaussianityCallback).
        seed: seed of the training and validation noise (each step's noise depends only on seed, rank and step).
    """

    backbone_name = "edm"

    def __init__(
        self,
        net: dict,
        schedule: dict,
        dataset: dict,
        normalizer: dict | None = None,
        optimizer: dict | None = None,
        ema_decay: float = 0.9999,
        adaptive_clipping: bool = True,
        max_consecutive_nonfinite: int = 20,
        zero_mean_features: bool = False,
        gaga: dict | None = None,
        backbone: str = "edm",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.normalizer = Normalizer.from_config(normalizer)
        self.num_atom_types = len(dataset["atom_symbols"])
        self.schedule = build(schedule)
        self.normalizer.check_against(self.schedule)
        self.net = build(net, num_features=self.normalizer.num_features(self.num_atom_types))
        self.feature_nll = OneHotLikelihood(self.normalizer)
        self.finish_setup()

    def check_truncatable(self) -> None:
        super().check_truncatable()
        if self.normalizer.include_charges:
            raise ValueError(
                "GAGA's closed form covers coordinates and one-hot types, not charges: set "
                "backbone.normalizer.include_charges=false (as the GAGA runs do), or gaga.t_star=off"
            )

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
        loss, t = l2_loss(
            self.net,
            self.schedule,
            self.feature_nll,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            t_max=self.t_max,
            zero_mean_features=self.hparams.zero_mean_features,
            generator=generator,
        )
        return {"loss": loss, **split_by_step(loss, t)}

    def nll_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pos, h = self.diffusion_state(batch)
        return nll_estimate(
            self.averaged("net"),
            self.schedule,
            self.normalizer,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            self.log_prob_num_atoms(batch),
            self.feature_nll,
            t_max=self.t_max,
            prior_variance=self.start_variance(self.t_max),
            zero_mean_features=self.hparams.zero_mean_features,
            generator=generator,
        )

    def decode(self, final: FinalState, use_ema: bool = True) -> SamplerOutput:
        return OneHotDecoder(self.normalizer)(final)

"""The flow-matching backbone (EquiFM, Song et al. 2023): EDM's EGNN as a velocity field on a `FlowPath`.

Atoms are normalised as for EDM (coordinates, one-hot / 4, charges / 10); the path runs from data (t = 0) to noise
(t = 1): coordinates on the linear path, atom features on EquiFM's variance-preserving path (kind "hybrid", EquiFM)
or on the linear path (kind "linear", its ablation; checkpoints written before the kinds load as that).
Training: the velocity regression (EquiFM's reparameterised target on the hybrid path's features), with EquiFM's
equivariant OT coupling of noise to data as an option. Validation logs that loss (val/loss, what checkpoints and
Optuna rank); the ODE density is opt-in. Sampling: dopri5 at rtol = atol = 1e-4 by default (EquiFM's). With GAGA,
training draws t from [0, T*/T] and sampling integrates the ODE from the closed-form Gaussian at T*/T (each block
with its own alpha_bar and path scale) down to 0.
"""

from __future__ import annotations

import torch

from gaga.diffusion.decoding import FinalState, OneHotDecoder, SamplerOutput
from gaga.diffusion.flow_matching import LOSS_NORMALISATIONS, ode_nll, ot_couple, velocity_loss
from gaga.diffusion.flow_path import FlowPath, LinearPath
from gaga.diffusion.forward import remove_mean, sample_noise
from gaga.diffusion.samplers import Adaptive, Euler, Heun
from gaga.models.base import DiffusionBackbone
from gaga.models.build import build
from gaga.nn.graph import float32


class FlowMatching(DiffusionBackbone):
    """Equivariant flow matching on PyG batches, with optional GAGA truncation of the path.

    Args:
        net: config of the velocity network (`gaga.nn.EGNNDynamics`, given t in [0, 1]).
        schedule: config of the path (`gaga.diffusion.flow_path.FlowPath`: kind hybrid or linear, sigma_min); its
            grid of T steps (step k is t = k / T) is where GAGA's T* and the samplers' start and stride live. None:
            `LinearPath` (checkpoints written before the path had a setting).
        ot_coupling: pair noise with data by EquiFM's equivariant OT (all-atom Hungarian alternated with Kabsch,
            then one assignment on the rotated noise). Not with GAGA: the coupled noise depends on the data.
        loss_normalisation: "padded" (EDM's divisor (3 + F) N_max) or "atom_mean" (EquiFM's per-atom mean).
        ode_tolerance: rtol = atol of the adaptive (dopri5) sampler and of the ODE density.
        ode_likelihood: also log val/density_nll, -log of the flow's continuous density of the normalised atoms (dopri5,
            Hutchinson's divergence): not a likelihood of molecules (types not dequantised).
        validation_metric: what checkpoints and Optuna rank runs by: "val/loss" (the velocity loss, EquiFM's) or
            "val/density_nll" (needs ode_likelihood).
        nll_steps: unused (the ODE density is integrated adaptively); accepted so that older checkpoints load.
        dataset: as for `gaga.models.edm.EDM`.
        **settings: the settings every backbone takes (`gaga.models.base.SHARED_SETTINGS`).
    """

    backbone_name = "flow_matching"
    samplers = (Adaptive, Euler, Heun)
    validation_metrics = ("val/loss", "val/density_nll")

    def __init__(
        self,
        net: dict,
        dataset: dict,
        schedule: dict | None = None,
        ot_coupling: bool = False,
        loss_normalisation: str = "padded",
        ode_tolerance: float = 1e-4,
        ode_likelihood: bool = False,
        validation_metric: str = "val/loss",
        nll_steps: int = 20,
        **settings,
    ):
        super().__init__()
        if validation_metric not in self.validation_metrics:
            raise ValueError(
                f"backbone.validation_metric={validation_metric!r}: use one of {list(self.validation_metrics)}"
            )
        if validation_metric == "val/density_nll" and not ode_likelihood:
            raise ValueError("backbone.validation_metric=val/density_nll needs backbone.ode_likelihood=true")
        if not ode_tolerance > 0:
            raise ValueError(f"backbone.ode_tolerance must be > 0, got {ode_tolerance}")
        if loss_normalisation not in LOSS_NORMALISATIONS:
            raise ValueError(
                f"backbone.loss_normalisation={loss_normalisation!r}: use one of {list(LOSS_NORMALISATIONS)}"
            )
        self.save_hyperparameters()
        self.apply_settings()
        self.schedule: FlowPath = build(schedule) if schedule else LinearPath()
        self.net = self.build_denoiser(net, self.normalizer.num_features(len(dataset["atom_symbols"])))
        self.finish_setup()

    def diffusion_state(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised atoms, features zero-meaned per molecule with `zero_mean_features` (as EDM)."""
        pos, h = self.normalised_atoms(batch)
        if self.hparams.zero_mean_features:
            h = remove_mean(h, batch.batch, batch.num_graphs)
        return pos, h

    def check_truncatable(self, features: str = "centred") -> None:
        """The base class's rules, and no OT coupling (`check_coupling`)."""
        check_coupling(bool(self.hparams.ot_coupling), truncated=True)
        super().check_truncatable(features)

    def field(self, context: torch.Tensor | None, use_ema: bool = True):
        """The velocity field dz/dt of the (EMA) network, reading `context`, on this path."""
        return self.schedule.field(self.denoiser(context, use_ema))

    def sampling_network(self, context: torch.Tensor | None, use_ema: bool):
        """The samplers integrate the velocity field (`field`)."""
        return self.field(context, use_ema)

    # --- objectives -------------------------------------------------------------------------------

    def _noise(self, batch, pos, h, generator):
        zero_mean = bool(self.hparams.zero_mean_features)
        eps_pos, eps_h = sample_noise(pos, h, batch.batch, batch.num_graphs, zero_mean, generator)
        if self.hparams.ot_coupling:
            eps_pos, eps_h = ot_couple(pos, eps_pos, eps_h, batch.batch)
        return eps_pos, eps_h

    def flow_loss(self, net, batch, generator: torch.Generator) -> torch.Tensor:
        """The velocity regression loss per molecule [B] at t ~ U[0, T*/T] (U[0, 1] without GAGA)."""
        pos, h = self.diffusion_state(batch)
        start_time = self.truncation.start_step / self.schedule.timesteps
        t = torch.rand(batch.num_graphs, device=pos.device, generator=generator) * start_time
        noise = self._noise(batch, pos, h, generator)
        normalisation = self.hparams.get("loss_normalisation", "padded")
        return velocity_loss(net, self.schedule, pos, h, noise, t, batch.batch, batch.num_graphs, normalisation)

    def training_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"loss": self.flow_loss(self.denoiser(self.batch_context(batch), False), batch, generator)}

    def nll_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """-log p(x, h, N): the flow's continuous density of the normalised atoms (types not dequantised: it falls
        without bound as the type density sharpens, not comparable with EDM's discrete NLL), the coordinate
        scaling's volume term and -log p(N)."""
        pos, h = self.diffusion_state(batch)
        num_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs)
        terms = {
            "flow": ode_nll(
                self.field(self.batch_context(batch)),
                pos,
                h,
                batch.batch,
                batch.num_graphs,
                self.truncation.start_step / self.schedule.timesteps,
                self.truncation.start_gaussian(),
                bool(self.hparams.zero_mean_features),
                generator,
                rtol=self.tolerance,
                atol=self.tolerance,
            ),
            "volume": -self.normalizer.log_volume_change(num_atoms),
            "num_atoms": -self.log_prob_num_atoms(batch),
        }
        terms["nll"] = sum(terms.values())
        return terms

    @property
    def tolerance(self) -> float:
        return float(self.hparams.get("ode_tolerance", 1e-4))

    @property
    def sampler_settings(self) -> dict:
        return {"rtol": self.tolerance, "atol": self.tolerance}

    def _evaluate(self, batch, stream: int, batch_idx: int, stage: str) -> None:
        """{stage}/loss, the velocity loss of the EMA network on fixed noise; with ode_likelihood {stage}/density_nll,
        -log of the continuous density (named apart from EDM's discrete NLL, which it does not estimate)."""
        with float32(batch.pos):
            denoiser = self.denoiser(self.batch_context(batch), use_ema=True)
            loss = self.flow_loss(denoiser, batch, self._generator(stream, batch_idx)).mean()
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch.num_graphs, sync_dist=True)
            if self.hparams.get("ode_likelihood", False):
                nll = self.nll_terms(batch, self._generator(stream, batch_idx))["nll"].mean()
                self.log(f"{stage}/density_nll", nll, batch_size=batch.num_graphs, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, 1, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, 2, batch_idx, "test")

    # --- sampling ---------------------------------------------------------------------------------

    def decode(self, final: FinalState, use_ema: bool = True, context: torch.Tensor | None = None) -> SamplerOutput:
        """A state of the path read as atoms (coordinates in Angstrom, the argmax of the one-hot), as EDM's."""
        return OneHotDecoder(self.normalizer)(final)


def check_coupling(ot_coupling: bool, truncated: bool) -> None:
    """ValueError for GAGA with the OT coupling: the closed form assumes noise independent of the data, and the
    coupled noise is correlated with it (z_T* wider than the closed form: experiments/results/equifm.md)."""
    if ot_coupling and truncated:
        raise ValueError(
            "GAGA's closed form needs noise independent of the data, which backbone.ot_coupling=true breaks "
            "(z_T* is 1.7x wider than the closed form): set backbone.ot_coupling=false or gaga.t_star=off"
        )

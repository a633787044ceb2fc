"""The flow-matching backbone (EquiFM, Song et al. 2023): EDM's EGNN as a velocity field on the linear Gaussian path.

Atoms are normalised as for EDM (coordinates, one-hot / 4); the path z_t = (1 - t) x_0 + t eps runs from data
(t = 0) to zero-CoM noise (t = 1) and the network regresses the velocity eps - x_0. With GAGA, training draws t
from [0, T*/T] and sampling integrates the ODE from N(0, a^2 v_hat + b^2) at T*/T down to 0. Optional: EquiFM's
equivariant OT coupling of noise to data.
"""

from __future__ import annotations

import torch

from gaga.diffusion.flow_matching import integrate, integrate_adaptive, ode_nll, ot_couple, velocity_loss
from gaga.diffusion.flow_path import LinearPath
from gaga.diffusion.forward import remove_mean, sample_noise
from gaga.diffusion.samplers import FinalState, OneHotDecoder, SamplerOutput
from gaga.models.base import DiffusionBackbone
from gaga.models.build import build


class FlowMatching(DiffusionBackbone):
    """Equivariant flow matching on PyG batches, with optional GAGA truncation of the path.

    Args:
        net: config of the velocity network (`gaga.nn.EGNNDynamics`, given t in [0, 1]).
        schedule: config of the path (`gaga.diffusion.flow_path.LinearPath`); its grid of T steps (step k is
            t = k / T) is where GAGA's T* and the samplers' start and stride live.
        ot_coupling: pair noise with data by EquiFM's equivariant OT (Hungarian within atom types + Kabsch).
        nll_steps: Euler steps of the validation NLL (instantaneous change of variables, Hutchinson divergence).
        dataset: as for `gaga.models.edm.EDM`.
        **settings: the settings every backbone takes (`gaga.models.base.SHARED_SETTINGS`).
    """

    backbone_name = "flow_matching"
    sampler_options = {"euler": ("stride",), "heun": ("stride",), "adaptive": ()}

    def __init__(
        self,
        net: dict,
        dataset: dict,
        schedule: dict | None = None,
        ot_coupling: bool = False,
        nll_steps: int = 20,
        **settings,
    ):
        super().__init__()
        if nll_steps < 1:
            raise ValueError(f"backbone.nll_steps must be >= 1, got {nll_steps}")
        self.save_hyperparameters()
        self.apply_settings()
        self.schedule = build(schedule) if schedule else LinearPath()
        self.net = self.build_denoiser(net, self.normalizer.num_features(len(dataset["atom_symbols"])))
        self.finish_setup()

    def diffusion_state(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised atoms, features zero-meaned per molecule with `zero_mean_features` (as EDM)."""
        pos, h = self.normalised_atoms(batch)
        if self.hparams.zero_mean_features:
            h = remove_mean(h, batch.batch, batch.num_graphs)
        return pos, h

    def path_scale(self, t: int) -> float:
        return self.schedule.path_scale(t)

    # --- objectives -------------------------------------------------------------------------------

    def _noise(self, batch, pos, h, generator):
        zero_mean = bool(self.hparams.zero_mean_features)
        eps_pos, eps_h = sample_noise(pos, h, batch.batch, batch.num_graphs, zero_mean, generator)
        if self.hparams.ot_coupling:
            eps_pos, eps_h = ot_couple(pos, batch.x.argmax(dim=1), eps_pos, eps_h, batch.batch)
        return eps_pos, eps_h

    def training_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The velocity regression loss at t ~ U[0, T*/T] (U[0, 1] without GAGA)."""
        pos, h = self.diffusion_state(batch)
        t_max = self.t_max / self.schedule.timesteps
        t = torch.rand(batch.num_graphs, device=pos.device, generator=generator) * t_max
        noise = self._noise(batch, pos, h, generator)
        return {"loss": velocity_loss(self.net, pos, h, noise, t, batch.batch, batch.num_graphs)}

    def nll_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """-log p(x, h, N): the flow's continuous density of the normalised atoms (types not dequantised, so not
        comparable with EDM's discrete NLL), the coordinate scaling's volume term and -log p(N)."""
        pos, h = self.diffusion_state(batch)
        num_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs)
        terms = {
            "flow": ode_nll(
                self.averaged("net"),
                pos,
                h,
                batch.batch,
                batch.num_graphs,
                self.t_max / self.schedule.timesteps,
                self.start_variance(self.t_max),
                bool(self.hparams.zero_mean_features),
                self.hparams.nll_steps,
                generator,
                self.start_feature_mean(self.t_max),
            ),
            "volume": -self.normalizer.log_volume_change(num_atoms),
            "num_atoms": -self.log_prob_num_atoms(batch),
        }
        terms["nll"] = sum(terms.values())
        return terms

    # --- sampling ---------------------------------------------------------------------------------

    def decode(self, final: FinalState, use_ema: bool = True) -> SamplerOutput:
        """A state of the path read as atoms (coordinates in Angstrom, the argmax of the one-hot), as EDM's."""
        return OneHotDecoder(self.normalizer)(final)

    def reverse(
        self, pos, h, batch, start, sampler, stride, eta, use_ema, generator, on_step, keep_frame=None
    ) -> SamplerOutput:
        """Integrate the learned ODE from step `start` to 0 (Euler / Heun on the strided grid, or adaptive);
        `keep_frame` receives (step, pos, h) at every step of the strided grid."""
        if stride < 1 or start % stride:
            raise ValueError(f"stride must be a positive divisor of the start step {start}, got {stride}")
        num_graphs = int(batch.max()) + 1
        zero_mean = bool(self.hparams.zero_mean_features)

        def project(pos_t, h_t):
            return remove_mean(pos_t, batch, num_graphs), remove_mean(h_t, batch, num_graphs) if zero_mean else h_t

        velocity = self.averaged("net", use_ema)
        pos, h = project(pos, h)
        timesteps = self.schedule.timesteps
        times = [step / timesteps for step in range(start, -1, -stride)]
        at_step = None if keep_frame is None else lambda t, pos_t, h_t: keep_frame(round(t * timesteps), pos_t, h_t)
        if sampler == "adaptive":
            pos, h, evaluations = integrate_adaptive(
                velocity, pos, h, batch, start / timesteps, project, keep_times=times, keep_frame=at_step
            )
        else:
            pos, h, evaluations = integrate(velocity, pos, h, batch, times, sampler, project, on_step, at_step)
        onehot, charges = self.normalizer.split(h)
        return SamplerOutput(
            pos=pos * self.normalizer.position_scale,
            atom_types=onehot.argmax(dim=1),
            charges=None if charges is None else torch.round(charges).long(),
            num_evaluations=evaluations,
        )

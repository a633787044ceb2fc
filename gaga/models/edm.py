"""The EDM LightningModule: wires the dynamics network, the noise schedule, the losses and the samplers.

Thin by design: the math lives in gaga.diffusion and gaga.nn. GAGA's truncation is T* (the training range
{0..T*} and the sampling start) and the data variance v_hat that fixes the closed-form start Gaussian.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch

from gaga import __version__
from gaga.diffusion.forward import Normalizer, remove_mean
from gaga.diffusion.losses import l2_loss, log_prob_num_atoms, nll_estimate
from gaga.diffusion.samplers import SamplerOutput, ancestral_sample, ddim_sample
from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import FEATURES, POSITIONS, VarianceEstimate, marginal_variance, sample_reference_gaussian
from gaga.models.build import build

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive training steps with a NaN or infinite loss."""


class EDM(pl.LightningModule):
    """E(3)-equivariant diffusion (Hoogeboom et al. 2022) on PyG batches, with optional GAGA truncation.

    Every argument is plain data (dicts of `_target_` configs, numbers), so a checkpoint rebuilds the model
    with `EDM(**checkpoint["hyper_parameters"])` and no pickled objects.

    Args:
        net: config of the dynamics network; `num_features` is filled in from the data.
        schedule: config of the noise schedule (`gaga.diffusion.schedules.NoiseSchedule`).
        dataset: `{name, atom_symbols, num_atoms_hist}` from the training split's statistics.
        normalizer: `{norm_values: [1, 4, 10], include_charges: false}`.
        optimizer: AdamW settings `{lr, weight_decay, amsgrad}`.
        ema_decay: decay of the EMA weights used for validation, sampling and checkpoints' `ema_net` (0 = off).
        adaptive_clipping: EDM's gradient clipping at 1.5 x mean + 2 x std of the last 50 gradient norms.
        max_consecutive_nonfinite: stop after this many skipped steps in a row.
        zero_mean_features: zero-mean the atom features (data and noise) per molecule, as the GAGA reference code does.
        gaga: `{t_star, v_hat: {pos, h}}` when trained with truncation (set by the GaussianityCallback).
        seed: seed of the training and validation noise (each step's noise depends only on seed, rank and step).
    """

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
        normalizer = dict(normalizer or {})
        self.normalizer = Normalizer.from_edm(
            normalizer.get("norm_values", [1.0, 4.0, 10.0]), include_charges=normalizer.get("include_charges", False)
        )
        self.num_atom_types = len(dataset["atom_symbols"])
        self.schedule: NoiseSchedule = build(schedule)
        self.normalizer.check_against(self.schedule)
        self.net = build(net, num_features=self.normalizer.num_features(self.num_atom_types))
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False) if ema_decay > 0 else None
        self.num_atoms_hist = {int(k): int(v) for k, v in dataset["num_atoms_hist"].items()}
        self.grad_norms: deque[float] = deque([3000.0], maxlen=50)
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._step_clock = time.perf_counter()
        self.set_truncation(gaga)

    # --- GAGA --------------------------------------------------------------------------------

    def set_truncation(self, gaga: dict | None) -> None:
        """Train on {0..T*} and sample from GAGA's closed-form Gaussian at T*; None restores the full trajectory.

        `gaga = {"t_star": int, "v_hat": {"pos": float, "h": float}}`, with v_hat the data variance per
        degree of freedom of the noise (so v_hat = 1 gives EDM's standard-normal prior at every step).
        """
        timesteps = self.schedule.timesteps
        t_star = int(gaga["t_star"]) if gaga else timesteps
        if not 1 <= t_star <= timesteps:
            raise ValueError(f"T* must lie in 1..{timesteps} (the schedule's T), got {t_star}")
        v_hat = (gaga or {}).get("v_hat") or {}
        self.v_hat = {"pos": float(v_hat.get("pos", 1.0)), "h": float(v_hat.get("h", 1.0))}
        self.t_max = self.sampling_start = t_star
        self.hparams["gaga"] = {"t_star": t_star, "v_hat": dict(self.v_hat)} if gaga else None

    @property
    def variance_estimate(self) -> VarianceEstimate:
        """v_hat per block in units of the model's own noise (whose variance is therefore 1)."""
        data = {POSITIONS: self.v_hat["pos"], FEATURES: self.v_hat["h"]}
        return VarianceEstimate("checkpoint", True, data, {POSITIONS: 1.0, FEATURES: 1.0})

    def alpha_bar(self, t: int) -> float:
        return float(self.schedule.alpha2(torch.tensor(t)))

    def start_variance(self, t: int) -> tuple[float, float]:
        """GAGA's closed-form variance of z_t for (positions, features): v_t = 1 - alpha_bar_t (1 - v_hat)."""
        variance = marginal_variance(self.variance_estimate, self.alpha_bar(t))
        return float(variance[POSITIONS]), float(variance[FEATURES])

    # --- data ----------------------------------------------------------------------------------

    def encode(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """PyG batch -> normalised (pos zero-CoM, h); h zero-meaned per molecule too with `zero_mean_features`.

        Zero-meaned features keep their argmax (decoding is unchanged) and give GAGA's closed form mu_t = 0;
        the NLL's p(h | z_0) term then scores the shifted one-hot, so it is approximate in that setting.
        """
        pos = remove_mean(batch.pos, batch.batch, batch.num_graphs)
        pos, h = self.normalizer.encode(pos, batch.x, batch.charges)
        if self.hparams.zero_mean_features:
            h = remove_mean(h, batch.batch, batch.num_graphs)
        return pos, h

    def denoiser(self, use_ema: bool):
        return self.ema_net if use_ema and self.ema_net is not None else self.net

    # --- training ------------------------------------------------------------------------------

    def _generator(self, stream: int, index: int) -> torch.Generator:
        """Noise that depends only on (seed, rank, stream, index): resumed runs and validations repeat exactly."""
        entropy = [self.hparams.seed, self.global_rank, stream, index]
        return torch.Generator(self.device).manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))

    def training_step(self, batch, batch_idx: int):
        pos, h = self.encode(batch)
        losses, _ = l2_loss(
            self.net,
            self.schedule,
            self.normalizer,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            t_max=self.t_max,
            zero_mean_features=self.hparams.zero_mean_features,
            generator=self._generator(0, self.global_step),
        )
        loss = losses.mean()
        if not torch.isfinite(loss):
            return self._skip_nonfinite(loss)
        self.nonfinite_in_a_row = 0
        now = time.perf_counter()
        self.log("train/steps_per_s", 1.0 / max(now - self._step_clock, 1e-9), prog_bar=False)
        self._step_clock = now
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.num_graphs)
        return loss

    def _skip_nonfinite(self, loss: torch.Tensor) -> None:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total))
        log.warning(
            "step %d: loss is %s, step skipped (%d in a row)", self.global_step, loss.item(), self.nonfinite_in_a_row
        )
        if self.nonfinite_in_a_row >= self.hparams.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} training steps in a row had a non-finite loss; stopping. "
                "Lower the learning rate (backbone.optimizer.lr), keep adaptive_clipping on, or resume from the last "
                "checkpoint (its weights are finite)."
            )
        return None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if not self.hparams.adaptive_clipping:
            return self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norms = np.array(self.grad_norms)
        max_norm = float(1.5 * norms.mean() + 2 * norms.std())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm))
        self.grad_norms.append(min(grad_norm, max_norm))
        self.log_dict({"train/grad_norm": grad_norm, "train/grad_clipped": float(grad_norm > max_norm)})
        if grad_norm > max_norm:
            log.debug("clipped gradient norm %.1f to %.1f", grad_norm, max_norm)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema_net is None or outputs is None:
            return
        decay = self.hparams.ema_decay
        with torch.no_grad():
            for ema, current in zip(self.ema_net.parameters(), self.net.parameters(), strict=True):
                ema.lerp_(current, 1.0 - decay)

    def configure_optimizers(self):
        settings = {"lr": 1e-4, "weight_decay": 1e-12, "amsgrad": True, **(self.hparams.optimizer or {})}
        return torch.optim.AdamW(self.net.parameters(), **settings)

    # --- evaluation ----------------------------------------------------------------------------

    def _nll(self, batch, generator: torch.Generator) -> torch.Tensor:
        pos, h = self.encode(batch)
        num_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs)
        terms = nll_estimate(
            self.denoiser(use_ema=True),
            self.schedule,
            self.normalizer,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            log_prob_num_atoms(self.num_atoms_hist, num_atoms),
            t_max=self.t_max,
            prior_variance=self.start_variance(self.t_max),
            zero_mean_features=self.hparams.zero_mean_features,
            generator=generator,
        )
        return terms["nll"]

    def validation_step(self, batch, batch_idx: int) -> None:
        nll = self._nll(batch, self._generator(1, batch_idx)).mean()
        self.log("val/nll", nll, prog_bar=True, batch_size=batch.num_graphs, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        nll = self._nll(batch, self._generator(2, batch_idx)).mean()
        self.log("test/nll", nll, batch_size=batch.num_graphs, sync_dist=True)

    # --- sampling ------------------------------------------------------------------------------

    def sample_num_atoms(self, num_molecules: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Molecule sizes drawn from the training split's p(N)."""
        sizes = torch.tensor(list(self.num_atoms_hist.keys()))
        counts = torch.tensor(list(self.num_atoms_hist.values()), dtype=torch.float)
        return sizes[torch.multinomial(counts, num_molecules, replacement=True, generator=generator)]

    @torch.no_grad()
    def sample(
        self,
        num_atoms: torch.Tensor,
        sampler: str = "ancestral",
        stride: int = 1,
        start: int | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
        generator: torch.Generator | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> tuple[SamplerOutput, torch.Tensor]:
        """Molecules of the given sizes: (sampler output, per-atom molecule index).

        Starts at `start` (default: T* for a GAGA model, T otherwise) from the closed-form Gaussian
        N(0, v_start) (`start_variance`; the standard normal for a model trained without GAGA), with the
        coordinates at zero centre of mass.
        """
        device = self.device
        num_atoms = num_atoms.to(device)
        batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=device), num_atoms)
        start = self.sampling_start if start is None else int(start)
        zero_mean_features = self.hparams.zero_mean_features
        widths = {POSITIONS: 3, FEATURES: self.normalizer.num_features(self.num_atom_types)}
        z = sample_reference_gaussian(
            batch,
            widths,
            self.variance_estimate,
            self.alpha_bar(start),
            zero_com_blocks=(POSITIONS, FEATURES) if zero_mean_features else (POSITIONS,),
            num_molecules=len(num_atoms),
            generator=generator,
        )
        pos, h = z[:, :3], z[:, 3:]
        common = dict(
            denoiser=self.denoiser(use_ema),
            schedule=self.schedule,
            normalizer=self.normalizer,
            pos=pos,
            h=h,
            batch=batch,
            num_graphs=len(num_atoms),
            t_start=start,
            stride=stride,
            zero_mean_features=zero_mean_features,
            generator=generator,
            on_step=on_step,
        )
        if sampler == "ancestral":
            output = ancestral_sample(**common)
        elif sampler == "ddim":
            output = ddim_sample(**common, eta=eta)
        else:
            raise ValueError(f"unknown sampler {sampler!r}: use ancestral or ddim")
        return output, batch

    # --- checkpoints ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain-dict hyperparameters (loadable with weights_only=True) and never a non-finite weight."""
        bad = [
            name
            for name, value in checkpoint["state_dict"].items()
            if value.is_floating_point() and not value.isfinite().all()
        ]
        if bad:
            raise NonFiniteLossError(f"refusing to write a checkpoint with non-finite weights: {bad[:3]}")
        checkpoint["hyper_parameters"] = _plain(dict(self.hparams))
        checkpoint["gaga_version"] = __version__
        checkpoint["grad_norms"] = list(self.grad_norms)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.grad_norms = deque(checkpoint.get("grad_norms", [3000.0]), maxlen=50)
        self.set_truncation(checkpoint["hyper_parameters"].get("gaga"))


def _plain(value):
    """OmegaConf containers and tuples -> builtin dicts and lists, recursively."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value

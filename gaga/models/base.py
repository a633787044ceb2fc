"""What every diffusion backbone shares, and the one interface the rest of gaga uses to talk to a backbone.

`DiffusionBackbone` holds EMA, EDM's adaptive gradient clipping, non-finite step skipping, the optimiser from
config, step timing, the optional torch.compile of the denoiser, GAGA's truncation and the sampling loop; a backbone
(EDM, GeoLDM) supplies the space it diffuses in (`diffusion_state`), its objectives (`training_terms`, `nll_terms`)
and its decoder (`decode`).

Besides reading the length of each network call's edge list (gaga.nn.graph), a training step waits for the device
once: to decide whether its loss and gradient are finite before the optimiser step (skipping is exact: a step on
zeroed gradients would still move AdamW's moments).
Clipping, the gradient-norm history, EMA and the logged values stay on the device; the terms besides the loss
(their latest values) and the step rate are logged at Lightning's logging steps and each epoch's last step, where
Lightning reads values anyway. Validation and test NLLs run in float32 whatever the training precision.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.data.data import BaseData

from gaga import __version__
from gaga.diffusion.forward import Normalizer, remove_mean
from gaga.diffusion.losses import l2_loss, log_prob_num_atoms, nll_estimate
from gaga.diffusion.samplers import FinalState, FrameCallback, SamplerOutput, ancestral_sample, ddim_sample
from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import (
    FEATURES,
    POSITIONS,
    VarianceEstimate,
    marginal_mean,
    marginal_variance,
    sample_reference_gaussian,
)
from gaga.models.build import build
from gaga.nn.graph import float32

log = logging.getLogger(__name__)
# Lightning says, on every fit with a datamodule, that it uses the module's `transfer_batch_to_device` (below)
warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device` in `LightningModule`")

# EDM seeds its queue of recent gradient norms with 3000: the first clipping threshold, 1.5 * 3000 + 2 * 0,
# is far above any real norm, so early steps are never clipped; the value then leaves the 50-step window.
INITIAL_GRAD_NORM = 3000.0
GRAD_NORM_WINDOW = 50

# AdamW as EDM and GeoLDM train (lr 1e-4, weight decay 1e-12, AMSGrad); a config may name another optimiser.
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decay": 1e-12, "amsgrad": True}


# Settings every backbone takes (as keyword arguments, stored as hyperparameters), with their defaults:
#   normalizer: `{norm_values: [1, 4, 10], include_charges: false}` (EDM's normalize_factors);
#   optimizer: optimiser config (`_target_` + settings; AdamW with EDM's settings by default);
#   ema_decay: decay of the EMA weights used for validation, sampling and checkpoints' `ema_*` (0 = off);
#   adaptive_clipping: EDM's gradient clipping at 1.5 x mean + 2 x std of the last 50 gradient norms;
#   max_consecutive_nonfinite: stop after this many skipped steps in a row;
#   zero_mean_features: zero-mean the diffused features (data and noise) per molecule, as GAGA needs;
#   gaga: `{t_star, v_hat: {pos, h}}` when trained with truncation (set by the GaussianityCallback);
#   seed: seed of the training and validation noise (each step's noise depends only on seed, rank and step);
#   backbone: the backbone's name (checkpoints, sample.py's backbone= check); the class's own by default;
#   compile: torch.compile the denoiser and its EMA copy for training and evaluation runs (`compile_denoiser`).
SHARED_SETTINGS = {
    "normalizer": None,
    "optimizer": None,
    "ema_decay": 0.9999,
    "adaptive_clipping": True,
    "max_consecutive_nonfinite": 20,
    "zero_mean_features": False,
    "gaga": None,
    "seed": 0,
    "backbone": None,
    "compile": False,
}


class NonFiniteLossError(RuntimeError):
    """Too many consecutive training steps with a NaN or infinite loss."""


class DiffusionBackbone(pl.LightningModule):
    """Base LightningModule of a Gaussian diffusion backbone with GAGA truncation.

    The interface used by the GaussianityCallback, `sample.py` and the sample-quality callback:
    `gaussianity_data` (the arrays the evaluator tests), `gaussianity_ready` (whether they are final),
    `gaussianity_identity` (for the T* cache key), `check_truncatable`, `set_truncation`, `schedule`,
    `sample_num_atoms` and `sample`.

    A subclass takes `**settings` (`SHARED_SETTINGS`) besides its own arguments, calls `save_hyperparameters()`
    and `apply_settings()` first, sets `self.schedule`, `self.net` (the denoiser), calls `finish_setup()` at the
    end of its `__init__`, and implements `diffusion_state`, `training_terms`, `nll_terms` and `decode`.
    """

    schedule: NoiseSchedule
    normalizer: Normalizer
    net: torch.nn.Module
    # modules whose EMA copy (attribute `ema_<name>`) validation, sampling and checkpoints use
    averaged_modules: tuple[str, ...] = ("net",)
    # name of the backbone in checkpoints and in sample.py's backbone= check
    backbone_name: str = ""
    # whether the diffused state holds the normalised atom features themselves (EDM, flow matching), whose
    # charges column GAGA's closed form does not cover, or something else (GeoLDM's latents)
    diffuses_atom_features: bool = True

    # --- set-up -----------------------------------------------------------------------------------

    def apply_settings(self) -> None:
        """Fill the shared settings' defaults into the hyperparameters (refusing unknown ones); build the normaliser."""
        own = set(inspect.signature(type(self).__init__).parameters) - {"self", "settings"}
        unknown = sorted(set(self.hparams) - own - set(SHARED_SETTINGS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown settings {unknown}; it takes {sorted(own)} and the shared "
                f"{sorted(SHARED_SETTINGS)}"
            )
        for name, default in SHARED_SETTINGS.items():
            self.hparams.setdefault(name, default)
        if not isinstance(self.hparams.compile, bool):
            raise ValueError(f"backbone.compile must be true or false, got {self.hparams.compile!r}")
        self.hparams["backbone"] = self.hparams["backbone"] or self.backbone_name
        self.normalizer = Normalizer.from_config(self.hparams.normalizer)

    def finish_setup(self) -> None:
        """EMA copies, gradient-norm history, step clock and truncation; call at the end of a subclass's init."""
        for name in self.averaged_modules:
            averaged = copy.deepcopy(getattr(self, name)).requires_grad_(False) if self.hparams.ema_decay > 0 else None
            setattr(self, f"ema_{name}", averaged)
        self.num_atoms_hist = {int(k): int(v) for k, v in self.hparams.dataset["num_atoms_hist"].items()}
        # EDM's queue of the last 50 (clipped) gradient norms, oldest first, kept on the model's device
        self.register_buffer("grad_norms", torch.tensor([INITIAL_GRAD_NORM], dtype=torch.float64), persistent=False)
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._step_loss = torch.zeros(())  # this step's loss, checked once the gradient exists
        self._grad_norm = torch.zeros(())
        self._step_skipped = False
        self._clock = (time.perf_counter(), 0)  # (time, global step) of the last logged step rate
        self._latest: dict[str, torch.Tensor] = {}  # the other training terms' latest values in this epoch
        self._compiled = False
        self.set_truncation(self.hparams.gaga)

    def averaged(self, name: str, use_ema: bool = True) -> torch.nn.Module:
        """The EMA copy of module `name` (when EMA is on and `use_ema`), else the trained module."""
        ema = getattr(self, f"ema_{name}", None)
        return ema if use_ema and ema is not None else getattr(self, name)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def setup(self, stage: str) -> None:
        if self.hparams.compile:
            self.compile_denoiser()

    def compile_denoiser(self, **options) -> None:
        """torch.compile the denoiser and its EMA copy in place, with dynamic shapes (once for every batch size).

        `nn.Module.compile` keeps the state-dict keys as they are (no `_orig_mod.` prefix), so checkpoints, EMA
        and resuming are unchanged. `options` go to torch.compile (tests pass a cheaper `backend`).
        """
        if self._compiled:
            return
        for module in (self.net, getattr(self, "ema_net", None)):
            if module is not None:
                module.compile(**{"dynamic": True, **options})
        self._compiled = True

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Copy a PyG batch without blocking the host (asynchronous from pinned memory); other batches as Lightning."""
        if isinstance(batch, BaseData):
            return batch.to(device, non_blocking=True)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def normalised_atoms(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """PyG batch -> (coordinates at zero CoM / position scale, [one-hot, charges] normalised): EDM's input."""
        pos = remove_mean(batch.pos, batch.batch, batch.num_graphs)
        return self.normalizer.encode(pos, batch.x, batch.charges)

    # --- the backbone's part ------------------------------------------------------------------------

    def diffusion_state(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A PyG batch -> (positions [N, 3] zero-CoM, features [N, F]): the clean state the diffusion noises."""
        raise NotImplementedError

    def training_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Training terms, per molecule [B] or already averaged; "loss" is the one optimised, the others are logged
        (as their mean over the molecules they cover: a NaN entry marks a molecule a term does not cover)."""
        raise NotImplementedError

    def nll_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-molecule terms [B] of the negative log-likelihood estimate; "nll" is their total."""
        raise NotImplementedError

    def decode(self, final: FinalState, use_ema: bool = True) -> SamplerOutput:
        """The reverse chain's final state -> molecules (Angstrom coordinates, atom-type indices)."""
        raise NotImplementedError

    def check_truncatable(self, features: str = "centred") -> None:
        """ValueError saying what to change when GAGA's closed form does not hold for this model.

        `features` is gaga.features: "centred" (the paper: zero-meaned features, mu_t = 0; no charges column) or
        "kept" (features as the backbone has them, every column with its own closed-form mean and variance).
        """
        if features == "kept":
            if self.hparams.zero_mean_features:
                raise ValueError(
                    "gaga.features=kept keeps the features' mean: set backbone.zero_mean_features=false "
                    "(the gaga= configs set it from gaga.features)"
                )
            return
        if not self.hparams.zero_mean_features:
            raise ValueError(
                "GAGA's closed form needs features zero-meaned per molecule (mu_t = 0): set "
                "backbone.zero_mean_features=true (the GAGA reference code's setting), gaga.features=kept "
                "(the features' own mean in the closed form), or gaga.t_star=off"
            )
        if self.diffuses_atom_features and self.normalizer.include_charges:
            raise ValueError(
                "GAGA's closed form covers coordinates and one-hot types, not charges: set "
                "backbone.normalizer.include_charges=false (as the GAGA runs do), or gaga.t_star=off"
            )

    @property
    def gaussianity_ready(self) -> bool:
        """Whether `gaussianity_data` is final for this run (GeoLDM's two-stage option: after the first stage)."""
        return True

    def gaussianity_identity(self) -> dict:
        """What, besides the data and the evaluator's settings, decides the evaluator's answer for this model."""
        schedule = self.schedule
        return {
            "backbone": self.backbone_name,
            "schedule": [schedule.name, schedule.timesteps, schedule.precision],
            "normalize": [self.normalizer.position_scale, self.normalizer.onehot_scale],
            "zero_mean_features": bool(self.hparams.zero_mean_features),
        }

    # --- GAGA -------------------------------------------------------------------------------------

    @property
    def zero_mean_blocks(self) -> tuple[str, ...]:
        """The blocks whose noise (and data) the model projects to zero mean per molecule."""
        return (POSITIONS, FEATURES) if self.hparams.zero_mean_features else (POSITIONS,)

    def set_truncation(self, gaga: dict | None) -> None:
        """Train on {0..T*} and sample from GAGA's closed-form Gaussian at T*; None restores the full trajectory.

        `gaga = {"t_star": int, "v_hat": {"pos": float, "h": float | [float]}, "mean": {"h": [float]}}`, with v_hat
        the data variance per degree of freedom of the noise (so v_hat = 1 gives EDM's standard-normal prior at every
        step). "mean" is present for features that keep their mean (gaga.features=kept): their per-column data mean
        m, with v_hat["h"] the per-column variance about it; the closed form is then N(sqrt(alpha_bar_t) m, v_t).
        """
        timesteps = self.schedule.timesteps
        t_star = int(gaga["t_star"]) if gaga else timesteps
        if not 1 <= t_star <= timesteps:
            raise ValueError(f"T* must lie in 1..{timesteps} (the schedule's T), got {t_star}")
        v_hat = (gaga or {}).get("v_hat") or {}
        feature_mean = ((gaga or {}).get("mean") or {}).get("h")
        self.v_hat = {"pos": float(v_hat.get("pos", 1.0)), "h": _per_column(v_hat.get("h", 1.0))}
        self.feature_mean = None if feature_mean is None else [float(m) for m in feature_mean]
        self.t_max = self.sampling_start = t_star
        record = {"t_star": t_star, "v_hat": dict(self.v_hat)}
        if self.feature_mean is not None:
            record["mean"] = {"h": list(self.feature_mean)}
        self.hparams["gaga"] = record if gaga else None

    @property
    def variance_estimate(self) -> VarianceEstimate:
        """v_hat per block in units of the model's own noise (whose variance is therefore 1), and the features'
        column mean when they keep it."""
        data = {POSITIONS: self.v_hat["pos"], FEATURES: self.v_hat["h"]}
        mean = {} if self.feature_mean is None else {FEATURES: list(self.feature_mean)}
        return VarianceEstimate("checkpoint", True, data, {POSITIONS: 1.0, FEATURES: 1.0}, mean)

    def alpha_bar(self, t: int) -> float | dict[str, float]:
        """alpha_bar_t, or a dict block -> alpha_bar_t for paths whose blocks move at different rates."""
        return float(self.schedule.alpha2(torch.tensor(t)))

    def path_scale(self, t: int) -> float | dict[str, float]:
        """s_t with z_t = s_t (sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps): 1 for variance-preserving paths; a
        dict block -> s_t for paths whose blocks move at different rates."""
        return 1.0

    def block_path_scale(self, t: int, block: str) -> float:
        """`path_scale` of one block."""
        scale = self.path_scale(t)
        return float(scale[block]) if isinstance(scale, dict) else float(scale)

    def start_variance(self, t: int) -> tuple[float, float | torch.Tensor]:
        """GAGA's closed-form variance of z_t for (positions, features): s_t^2 (1 - alpha_bar_t (1 - v_hat)); per
        column (a tensor [F]) for features that keep their mean."""
        variance = marginal_variance(self.variance_estimate, self.alpha_bar(t))
        features = variance[FEATURES] * self.block_path_scale(t, FEATURES) ** 2
        features = float(features) if np.ndim(features) == 0 else torch.as_tensor(features, device=self.device)
        return float(variance[POSITIONS]) * self.block_path_scale(t, POSITIONS) ** 2, features

    def start_feature_mean(self, t: int) -> torch.Tensor | None:
        """The closed-form mean of the features of z_t, s_t sqrt(alpha_bar_t) m [F] (None: zero-meaned features)."""
        if self.feature_mean is None:
            return None
        mean = marginal_mean(self.variance_estimate, FEATURES, self.alpha_bar(t)) * self.block_path_scale(t, FEATURES)
        return torch.as_tensor(mean, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def gaussianity_data(self, loader, progress: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(blocks, offsets) of `diffusion_state` over a loader's molecules: what GAGA's evaluator tests.

        The loader must not shuffle; offsets follow the molecules in its order. Blocks are float64 numpy.
        """
        from tqdm.auto import tqdm

        positions, features, sizes = [], [], []
        for batch in tqdm(loader, desc="GAGA: data for the evaluator", unit="batch", disable=not progress):
            pos, h = self.diffusion_state(batch.to(self.device))
            positions.append(pos.double().cpu().numpy())
            features.append(h.double().cpu().numpy())
            sizes.append(torch.bincount(batch.batch, minlength=batch.num_graphs).cpu().numpy())
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(sizes))]).astype(np.int64)
        return {POSITIONS: np.concatenate(positions), FEATURES: np.concatenate(features)}, offsets

    # --- training -----------------------------------------------------------------------------------

    def _generator(self, stream: int, index: int) -> torch.Generator:
        """Noise that depends only on (seed, rank, stream, index): resumed runs and validations repeat exactly."""
        entropy = [self.hparams.seed, self.global_rank, stream, index]
        return torch.Generator(self.device).manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))

    def training_step(self, batch, batch_idx: int):
        terms = self.training_terms(batch, self._generator(0, self.global_step))
        loss = terms["loss"].mean()
        self._step_loss = loss.detach()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.num_graphs)
        self._keep_latest(terms, batch_idx)
        if self._reads_logs(batch_idx):
            self._log_details(batch.num_graphs)
        return loss

    def _keep_latest(self, terms: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Each other term's latest value in this epoch, on the device: its mean over the molecules it covers, or,
        when it covers none in this step, its value from the last step that had some (what Lightning logs for a
        value last logged a few steps before)."""
        if batch_idx == 0:
            self._latest = {}
        for name, value in terms.items():
            if name != "loss":
                mean, previous = value.detach().nanmean(), self._latest.get(name)
                self._latest[name] = mean if previous is None else torch.where(mean.isnan(), previous, mean)

    def _reads_logs(self, batch_idx: int) -> bool:
        """Whether Lightning reads the logged values to the host after this step: its logging steps and each
        epoch's last step (whose values `callback_metrics` keeps). Without a trainer nothing is logged."""
        trainer = self._trainer
        if trainer is None:
            return False
        logging_step = (self.global_step + 1) % trainer.log_every_n_steps == 0
        return logging_step or batch_idx + 1 == trainer.num_training_batches or bool(trainer.fast_dev_run)

    def _log_details(self, num_graphs: int) -> None:
        """The other terms' latest values (left out while a term has covered no molecule in this epoch) and the
        training steps per second since the last logged rate."""
        for name, value in self._latest.items():
            if bool(torch.isfinite(value)):
                self.log(f"train/{name}", value, batch_size=num_graphs)
        now, steps = time.perf_counter(), self.global_step + 1 - self._clock[1]
        if steps > 0:
            self.log("train/steps_per_s", steps / max(now - self._clock[0], 1e-9))
        self._clock = (now, self.global_step + 1)

    def on_train_start(self) -> None:
        self._clock = (time.perf_counter(), self.global_step)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Skip a step whose loss or gradient norm is not finite, deciding with one wait for the device."""
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        self._grad_norm = torch.nn.utils.get_total_norm(grads).to(self._step_loss.device)
        self._step_skipped = not bool(torch.isfinite(self._step_loss) & torch.isfinite(self._grad_norm))
        if not self._step_skipped:
            self.nonfinite_in_a_row = 0
            return
        for parameter in self.trainable_parameters():
            parameter.grad = None  # the optimiser leaves parameters without a gradient, and their state, untouched
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total))
        log.warning(
            "step %d: loss %s, gradient norm %s; step skipped (%d in a row)",
            self.global_step,
            float(self._step_loss),
            float(self._grad_norm),
            self.nonfinite_in_a_row,
        )
        if self.nonfinite_in_a_row >= self.hparams.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} training steps in a row had a non-finite loss or gradient; stopping. "
                "Lower the learning rate (backbone.optimizer.lr), keep adaptive_clipping on, or resume from the last "
                "checkpoint (its weights are finite)."
            )

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """EDM's adaptive clipping at 1.5 x mean + 2 x std of the last 50 (clipped) gradient norms, on the device."""
        if self._step_skipped:
            return
        if not self.hparams.adaptive_clipping:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        grad_norm = self._grad_norm
        max_norm = clipping_threshold(self.grad_norms)
        # torch's clip_grad_norm_: gradients times min(max_norm / (norm + 1e-6), 1), without reading max_norm
        scale = torch.clamp((grad_norm + 1e-6).reciprocal() * max_norm.float(), max=1.0)
        torch._foreach_mul_([p.grad for p in self.trainable_parameters() if p.grad is not None], scale)
        clipped = torch.minimum(grad_norm.double(), max_norm)
        self.grad_norms = torch.cat([self.grad_norms, clipped.reshape(1)])[-GRAD_NORM_WINDOW:]
        self.log_dict({"train/grad_norm": grad_norm, "train/grad_clipped": (grad_norm > max_norm).float()})

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.ema_decay <= 0 or self._step_skipped:
            return
        with torch.no_grad():
            for name in self.averaged_modules:
                averaged, current = getattr(self, f"ema_{name}").parameters(), getattr(self, name).parameters()
                torch._foreach_lerp_(list(averaged), list(current), 1.0 - self.hparams.ema_decay)

    def configure_optimizers(self):
        """The optimiser of `optimizer` (a `_target_` config, `_partial_: true`: completed here with the trainable
        weights) over trainable weights."""
        config = {**DEFAULT_OPTIMIZER, **(self.hparams.optimizer or {}), "_partial_": True}
        return build(config)(self.trainable_parameters())

    # --- evaluation ---------------------------------------------------------------------------------

    def diffusion_loss(self, pos, h, batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM's l2 loss of the clean state (pos, h) per molecule, t ~ U{0..T*}, and the steps drawn; the t = 0
        term is the backbone's `feature_nll`."""
        return l2_loss(
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

    def diffusion_nll(self, pos, h, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """EDM's NLL estimate of the clean state (pos, h) with the EMA denoiser (GAGA: prior at T*), by term."""
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
            prior_feature_mean=self.start_feature_mean(self.t_max),
            zero_mean_features=self.hparams.zero_mean_features,
            generator=generator,
        )

    def log_prob_num_atoms(self, batch) -> torch.Tensor:
        num_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs)
        return log_prob_num_atoms(self.num_atoms_hist, num_atoms)

    def validation_step(self, batch, batch_idx: int) -> None:
        with float32(batch.pos):  # the NLL estimate does not depend on the training precision
            nll = self.nll_terms(batch, self._generator(1, batch_idx))["nll"].mean()
        self.log("val/nll", nll, prog_bar=True, batch_size=batch.num_graphs, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        with float32(batch.pos):
            nll = self.nll_terms(batch, self._generator(2, batch_idx))["nll"].mean()
        self.log("test/nll", nll, batch_size=batch.num_graphs, sync_dist=True)

    # --- sampling -----------------------------------------------------------------------------------

    def sample_num_atoms(self, num_molecules: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Molecule sizes drawn from the training split's p(N)."""
        sizes = torch.tensor(list(self.num_atoms_hist.keys()))
        counts = torch.tensor(list(self.num_atoms_hist.values()), dtype=torch.float)
        return sizes[torch.multinomial(counts, num_molecules, replacement=True, generator=generator)]

    @property
    def feature_width(self) -> int:
        """Width F of the feature block the diffusion runs on."""
        return self.net.num_features

    samplers: tuple[str, ...] = ("ancestral", "ddim")  # the first is the default (`sampler="auto"`)

    @torch.no_grad()
    def sample(
        self,
        num_atoms: torch.Tensor,
        sampler: str = "auto",
        stride: int = 1,
        start: int | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
        generator: torch.Generator | None = None,
        on_step: Callable[[], None] | None = None,
        keep_frame: FrameCallback | None = None,
    ) -> tuple[SamplerOutput, torch.Tensor]:
        """Molecules of the given sizes: (sampler output, per-atom molecule index).

        Starts at step `start` (default: T* for a GAGA model, T otherwise) from the closed-form Gaussian
        N(mu_start, v_start) (`start_variance`, `start_feature_mean`; the standard normal for a model trained
        without GAGA), with the zero-mean blocks projected, runs `reverse` to 0 and decodes with the backbone's
        `decode`. `keep_frame`, when given, receives (step, pos, h) of the start state and of the chain's states
        down to 0.
        """
        sampler = self.samplers[0] if sampler == "auto" else sampler
        if sampler not in self.samplers:
            raise ValueError(f"unknown sampler {sampler!r} for {self.backbone_name}: use one of {list(self.samplers)}")
        device = self.device
        num_atoms = num_atoms.to(device)
        batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=device), num_atoms)
        start = self.sampling_start if start is None else int(start)
        z = sample_reference_gaussian(
            batch,
            {POSITIONS: 3, FEATURES: self.feature_width},
            self.variance_estimate,
            self.alpha_bar(start),
            zero_com_blocks=self.zero_mean_blocks,
            num_molecules=len(num_atoms),
            generator=generator,
        )
        if self.path_scale(start) != 1.0:  # per block for paths whose blocks move at different rates
            scales = [self.block_path_scale(start, POSITIONS), self.block_path_scale(start, FEATURES)]
            z = torch.cat([z[:, :3] * scales[0], z[:, 3:] * scales[1]], dim=1)
        output = self.reverse(
            z[:, :3], z[:, 3:], batch, start, sampler, stride, eta, use_ema, generator, on_step, keep_frame
        )
        return output, batch

    def reverse(
        self, pos, h, batch, start, sampler, stride, eta, use_ema, generator, on_step, keep_frame=None
    ) -> SamplerOutput:
        """The reverse-time chain from state (pos, h) at step `start` down to 0, then `decode`: EDM's samplers."""
        common = dict(
            denoiser=self.averaged("net", use_ema),
            schedule=self.schedule,
            decode=lambda final: self.decode(final, use_ema),
            pos=pos,
            h=h,
            batch=batch,
            num_graphs=int(batch.max()) + 1,
            t_start=start,
            stride=stride,
            zero_mean_features=bool(self.hparams.zero_mean_features),
            generator=generator,
            on_step=on_step,
            keep_frame=keep_frame,
        )
        return ancestral_sample(**common) if sampler == "ancestral" else ddim_sample(**common, eta=eta)

    # --- checkpoints --------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain-dict hyperparameters (loadable with weights_only=True), the class to rebuild, never a NaN weight."""
        bad = [
            name
            for name, value in checkpoint["state_dict"].items()
            if value.is_floating_point() and not value.isfinite().all()
        ]
        if bad:
            raise NonFiniteLossError(f"refusing to write a checkpoint with non-finite weights: {bad[:3]}")
        checkpoint["hyper_parameters"] = plain(dict(self.hparams))
        checkpoint["backbone_target"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["gaga_version"] = __version__
        checkpoint["grad_norms"] = self.grad_norms.tolist()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        norms = checkpoint.get("grad_norms", [INITIAL_GRAD_NORM])[-GRAD_NORM_WINDOW:]
        self.grad_norms = torch.tensor(norms, dtype=torch.float64, device=self.grad_norms.device)
        self.set_truncation(checkpoint["hyper_parameters"].get("gaga"))


def clipping_threshold(grad_norms: torch.Tensor) -> torch.Tensor:
    """EDM's gradient-clipping threshold from its queue of recent norms: 1.5 x mean + 2 x (population) std."""
    return 1.5 * grad_norms.mean() + 2 * grad_norms.std(correction=0)


def split_by_step(loss: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """A per-molecule diffusion loss split by the step drawn: "l2" (t >= 1, the epsilon error) and "t0_nll" (t = 0,
    the reconstruction term -log p(x, h | z_0), on another scale: negative once the type bins are resolved).

    Each part is per molecule [B], NaN for the molecules that drew the other part (no host sync to select them);
    its mean over the batch is the part's `nanmean`, NaN when no molecule drew its steps.
    """
    return {"l2": loss.where(t > 0, math.nan), "t0_nll": loss.where(t == 0, math.nan)}


def weights_digest(module: torch.nn.Module) -> str:
    """A short hash of a module's weights (identifies e.g. the encoder that made a set of latents)."""
    digest = hashlib.sha1()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _per_column(value) -> float | list[float]:
    """A v_hat as stored: one float, or a list of floats (one per column)."""
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return [float(v) for v in value]
    return float(value)


def plain(value):
    """OmegaConf containers and tuples -> builtin dicts and lists, recursively."""
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return [plain(v) for v in value]
    return value

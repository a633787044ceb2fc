"""The backbone interface the rest of gaga talks to, and the Lightning steps every backbone shares.

`DiffusionBackbone` holds the settings, GAGA's truncation (T* and the start Gaussian), the training, validation and
test steps, and sampling (the sampler object from the user's options, its grid from the start step, the start
Gaussian, gaga.diffusion.samplers' loop). What the steps call lives in small modules: EMA (ema.py), the gradient guard
with non-finite skipping and EDM's clipping (gradient_guard.py), the step log (step_log.py), checkpoint entries and
loading (checkpoints.py); what EDM and GeoLDM share on top is vp.py. A backbone supplies the space it diffuses in
(`diffusion_state`), its objectives (`training_terms`, `nll_terms`), its samplers (`samplers`: sampler classes; the
network they call, `sampling_network`, is the denoiser unless it says otherwise) and its decoder (`decode`).

A conditional model (its `dataset` description has "conditioning": gaga.data.datamodule's
`conditioning_description`) normalises the molecules' properties into a context [B, k] (`context`, `batch_context`)
that every network call receives: `denoiser(context)` binds it to the denoiser, whose call signature the diffusion
code sees unchanged.

Besides reading the length of each network call's edge list (gaga.nn.graph), a training step waits for the device
once: to decide whether its loss and gradient are finite before the optimiser step. Validation and test NLLs run in
float32 whatever the training precision.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import warnings
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.data.data import BaseData

from gaga.data.properties import PropertyGivenSize, PropertyNorms
from gaga.diffusion.decoding import FinalState, SamplerOutput
from gaga.diffusion.forward import Normalizer, remove_mean
from gaga.diffusion.losses import log_prob_num_atoms
from gaga.diffusion.samplers import Chain, FrameCallback, Sampler, make_sampler, run
from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import FEATURES, POSITIONS
from gaga.models.build import build
from gaga.models.checkpoints import add_entries, truncation_record
from gaga.models.ema import add_averages, update_averages
from gaga.models.gradient_guard import GradientGuard
from gaga.models.step_log import StepLog
from gaga.models.truncation import Truncation
from gaga.nn.graph import float32

log = logging.getLogger(__name__)
# Lightning says, on every fit with a datamodule, that it uses the module's `transfer_batch_to_device` (below)
warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device` in `LightningModule`")

# AdamW as EDM and GeoLDM train (lr 1e-4, weight decay 1e-12, AMSGrad); a config may name another optimiser.
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decay": 1e-12, "amsgrad": True}


# Settings every backbone takes (as keyword arguments, stored as hyperparameters), with their defaults:
#   normalizer: `{norm_values: [1, 4, 10], include_charges: false}` (EDM's normalize_factors);
#   optimizer: optimiser config (`_target_` + settings; AdamW with EDM's settings by default);
#   ema_decay: decay of the EMA weights used for validation, sampling and checkpoints' `ema_*` (0 = off);
#   adaptive_clipping: EDM's gradient clipping at 1.5 x mean + 2 x std of the last 50 gradient norms;
#   max_consecutive_nonfinite: stop after this many skipped steps in a row;
#   zero_mean_features: zero-mean the diffused features (data and noise) per molecule, as GAGA needs;
#   gaga: a truncation record `{t_star, v_hat: {pos, h}}` to start from (checkpoints written before the truncation
#     had its own entry hold it here; the GaussianityCallback sets the model's truncation, which checkpoints store
#     as `truncation`);
#   seed: seed of the training and validation noise (each step's noise depends only on seed, rank and step);
#   backbone: the backbone's name (checkpoints, sample.py's expect_backbone= check); the class's own by default;
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
    # name of the backbone in checkpoints and in sample.py's expect_backbone= check
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
        conditioning = self.hparams.dataset.get("conditioning")
        self.property_norms = PropertyNorms.from_record(conditioning["norms"]) if conditioning else None
        self.property_given_size = PropertyGivenSize.from_record(conditioning["given_size"]) if conditioning else None

    @property
    def context_width(self) -> int:
        """Columns of the context every network reads: the number of properties conditioned on (0: unconditional)."""
        return len(self.property_norms.names) if self.property_norms else 0

    def build_denoiser(self, net: dict, num_features: int) -> torch.nn.Module:
        """The denoiser of config `net` for `num_features` feature columns, centring its feature output exactly when
        the backbone centres its features (`zero_mean_features`: one setting, the backbone's; a `net` entry of that
        name, which checkpoints before this change hold, is ignored)."""
        config = {key: value for key, value in net.items() if key != "zero_mean_features"}
        centred = bool(self.hparams.zero_mean_features)
        return build(config, num_features=num_features, zero_mean_features=centred, context_nf=self.context_width)

    def finish_setup(self) -> None:
        """EMA copies, gradient guard, step log and truncation; call at the end of a subclass's init."""
        add_averages(self, self.averaged_modules, self.hparams.ema_decay)
        self.num_atoms_hist = {int(k): int(v) for k, v in self.hparams.dataset["num_atoms_hist"].items()}
        self.gradient_guard = GradientGuard()
        self.step_log = StepLog()
        self._step_loss = torch.zeros(())  # this step's loss, checked once the gradient exists
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

    # --- conditioning -------------------------------------------------------------------------------

    def context(self, properties: torch.Tensor | None) -> torch.Tensor | None:
        """Properties [B, k] in their units -> the normalised context the networks read (None: unconditional);
        ValueError when a conditional model gets none."""
        if self.property_norms is None:
            return None
        if properties is None:
            raise ValueError(
                f"this model is conditioned on {list(self.property_norms.names)}: give the molecules' values "
                "(training data: data.conditioning; sampling: condition.<name>=VALUE, or none to draw them)"
            )
        return self.property_norms.normalise(properties.to(self.device, torch.float32))

    def batch_context(self, batch) -> torch.Tensor | None:
        """The context of a PyG batch's molecules, from the properties the data module put in it."""
        return self.context(getattr(batch, "properties", None)) if self.property_norms else None

    def denoiser(self, context: torch.Tensor | None, use_ema: bool) -> Callable:
        """The denoiser (its EMA copy with `use_ema`) as net(pos, h, t, batch), the context bound to it."""
        net = self.averaged("net", use_ema)
        return net if context is None else functools.partial(net, context=context)

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

    def decode(self, final: FinalState, use_ema: bool = True, context: torch.Tensor | None = None) -> SamplerOutput:
        """The reverse chain's final state -> molecules (Angstrom coordinates, atom-type indices); `context`: the
        molecules' context, for decoders that read it."""
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
        """Train on {0..T*} and sample from GAGA's closed-form Gaussian at T* (`gaga`: the record Truncation
        describes); None restores the full trajectory."""
        self.truncation = Truncation.from_record(gaga, self.schedule)

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
        self.step_log.after_step(self, terms, batch_idx, batch.num_graphs)
        return loss

    def on_train_start(self) -> None:
        self.step_log.start(self.global_step)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Skip a step whose loss or gradient norm is not finite, deciding with one wait for the device."""
        limit = self.hparams.max_consecutive_nonfinite
        if self.gradient_guard.check(self._step_loss, self.trainable_parameters(), self.global_step, limit):
            self.log("train/nonfinite_steps", float(self.gradient_guard.total))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """EDM's adaptive clipping (GradientGuard.clip), or Lightning's without `adaptive_clipping`; none if skipped."""
        if self.gradient_guard.skipped:
            return
        if not self.hparams.adaptive_clipping:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        self.log_dict(self.gradient_guard.clip(self.trainable_parameters()))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if not self.gradient_guard.skipped:
            update_averages(self, self.averaged_modules, self.hparams.ema_decay)

    def configure_optimizers(self):
        """The optimiser of `optimizer` (a `_target_` config, `_partial_: true`: completed here with the trainable
        weights) over trainable weights."""
        config = {**DEFAULT_OPTIMIZER, **(self.hparams.optimizer or {}), "_partial_": True}
        return build(config)(self.trainable_parameters())

    # --- evaluation ---------------------------------------------------------------------------------

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

    # the sampler classes (gaga.diffusion.samplers) the backbone runs; the first is the default (`sampler="auto"`)
    samplers: tuple[type[Sampler], ...] = ()

    @property
    def sampler_settings(self) -> dict:
        """The backbone's own settings of its samplers (flow matching: dopri5's rtol and atol)."""
        return {}

    def build_sampler(self, name: str = "auto", stride: int = 1, eta: float = 0.0) -> Sampler:
        """The sampler `name` ("auto": the backbone's first) with the user's options; ValueError naming the fix for
        an unknown name or an option it does not use."""
        return make_sampler(name, self.samplers, self.backbone_name, stride=stride, eta=eta, **self.sampler_settings)

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
        on_step: Callable[[int], None] | None = None,
        keep_frame: FrameCallback | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[SamplerOutput, torch.Tensor]:
        """Molecules of the given sizes: (sampler output, per-atom molecule index).

        Builds the sampler once (`build_sampler`: `stride`, `eta` where it uses them) and its grid from step `start`
        (default: T* for a GAGA model, T otherwise; `Sampler.steps` checks both), draws the start state from the
        closed-form Gaussian there (`truncation.draw`; the standard normal for a model trained without GAGA), with
        the zero-mean blocks projected, runs `reverse` to 0 and decodes with the backbone's `decode`. `keep_frame`,
        when given, receives (step, pos, h) of the start state and of the chain's states down to 0. A conditional
        model needs the molecules' `context` [B, k] (`context(properties)`); GAGA's start Gaussian is the same for
        every context: the noised marginal at T* does not depend on it.
        """
        if (context is None) != (self.property_norms is None):
            raise ValueError(f"a context of {self.context_width} properties per molecule is required (got none)")
        chosen = self.build_sampler(sampler, stride, eta)
        device = self.device
        num_atoms = num_atoms.to(device)
        batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=device), num_atoms)
        start = self.truncation.start_step if start is None else int(start)
        steps = chosen.steps(start, self.schedule.timesteps)
        pos, h = self.truncation.draw(
            batch, self.feature_width, self.zero_mean_blocks, len(num_atoms), generator, start
        )
        output = self.reverse(pos, h, batch, chosen, steps, use_ema, generator, on_step, keep_frame, context)
        return output, batch

    def reverse(
        self, pos, h, batch, sampler, steps, use_ema, generator, on_step, keep_frame=None, context=None
    ) -> SamplerOutput:
        """`sampler` (the reverse chain, or the ODE) from state (pos, h) at steps[0] down its grid `steps` to 0, then
        `decode`; the networks read `context`."""
        network = self.sampling_network(context, use_ema)
        chain = Chain(network, self.schedule, batch, bool(self.hparams.zero_mean_features), generator)
        decode = functools.partial(self.decode, use_ema=use_ema, context=context)
        return run(sampler, chain, decode, pos, h, steps, on_step, keep_frame)

    def sampling_network(self, context: torch.Tensor | None, use_ema: bool) -> Callable:
        """The network the samplers call, (pos, h, t, batch) with `context` bound: the (EMA) denoiser."""
        return self.denoiser(context, use_ema)

    # --- checkpoints --------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain-data hyperparameters and the entries gaga adds (gaga.models.checkpoints); never a NaN weight."""
        add_entries(checkpoint, self)
        checkpoint["grad_norms"] = self.gradient_guard.state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.gradient_guard.load_state(checkpoint.get("grad_norms"))
        self.set_truncation(truncation_record(checkpoint))


def weights_digest(module: torch.nn.Module) -> str:
    """A short hash of a module's weights (identifies e.g. the encoder that made a set of latents)."""
    digest = hashlib.sha1()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

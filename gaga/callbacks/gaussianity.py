"""GaussianityCallback: before fit, find T* on the training data and truncate the model's trajectory there.

The paper's step 1 as a Lightning callback: T* and v_hat are computed once (rank 0, broadcast in DDP) on the
arrays the backbone diffuses (EDM: normalised atoms; GeoLDM: its encoder's latents), cached by data + backbone
identity + evaluator settings (with a SHA-256 digest: a damaged cache is reported and recomputed, never loaded),
stored in the checkpoint and logged with their curves. It talks to the model only through the backbone interface of
gaga.models.base.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl

from gaga.atomic_files import DigestError, read_verified_text, write_text_with_digest
from gaga.console import interactive, say
from gaga.gaussianity import (
    FEATURES,
    POSITIONS,
    GaussianitySettings,
    TStarResult,
    find_t_star,
)
from gaga.gaussianity.choice import choose_variance
from gaga.gaussianity.tstar import EVALUATOR_VERSION

log = logging.getLogger(__name__)

FEATURE_CHOICES = ("centred", "kept")


class GaussianityCallback(pl.Callback):
    """Sets the module's truncation (training range {0..T*}, sampling start T*, start Gaussian's v_hat).

    Args:
        t_star: "auto" (find it with the evaluator), an integer (use it; v_hat is still measured) or "off"
            (the full trajectory: plain EDM).
        cache_dir: where evaluations are cached (keyed by data, schedule and settings); None disables the cache.
        out_dir: where this run's curves (CSV, JSON) and plot (PNG) are written.
        features: "centred" (the paper and its reference code: atom features zero-meaned per molecule, mu_t = 0) or
            "kept" (EDM's features as they are; their closed form carries the data's per-column mean).
        **settings: `gaga.gaussianity.GaussianitySettings` fields (mode, eps_dep, eps_ds, ...).
    """

    def __init__(
        self,
        t_star: str | int = "auto",
        cache_dir: str | None = None,
        out_dir: str | None = None,
        features: str = "centred",
        **settings,
    ):
        if not (t_star in ("auto", "off") or (isinstance(t_star, int) and t_star > 0)):
            raise ValueError(
                f"gaga.t_star must be auto, off or a positive step number, got {t_star!r} (quote 'off' in YAML)"
            )
        if features not in FEATURE_CHOICES:
            raise ValueError(f"gaga.features={features!r}; use one of {FEATURE_CHOICES}")
        self.t_star = t_star
        self.features = features
        kept = (FEATURES,) if features == "kept" else ()
        self.settings = GaussianitySettings.from_dict({**settings, "kept_blocks": kept})
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.out_dir = Path(out_dir) if out_dir else None
        self.result: TStarResult | None = None
        self.pending = False  # T* still to be found (set up, but the model's data were not final yet)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.t_star == "off":
            pl_module.set_truncation(None)
            log.info("GAGA off: training and sampling on the full trajectory (T=%d)", pl_module.schedule.timesteps)
            return
        pl_module.check_truncatable(self.features)
        self.pending = True
        if pl_module.gaussianity_ready:
            self._truncate(trainer, pl_module)
        else:
            self._say("GAGA: T* will be found when the model's data are final (after GeoLDM's autoencoder stage)")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.pending:
            self._log_truncation(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pending and pl_module.gaussianity_ready:
            self._truncate(trainer, pl_module)
            self._log_truncation(trainer, pl_module)

    def _truncate(self, trainer: pl.Trainer, pl_module) -> None:
        """Find T* and v_hat on rank 0, broadcast them and truncate the model (every rank)."""
        truncation = self._truncation(trainer, pl_module) if trainer.is_global_zero else None
        truncation = trainer.strategy.broadcast(truncation, src=0)
        pl_module.set_truncation(truncation)
        self.pending = False
        timesteps = pl_module.schedule.timesteps
        v_hat = ", ".join(f"{block} {_numbers(value)}" for block, value in truncation["v_hat"].items())
        kept = f", feature mean {_numbers(truncation['mean']['h'])} (kept)" if "mean" in truncation else ""
        self._say(f"GAGA: T* = {truncation['t_star']} of T = {timesteps}, v_hat: {v_hat}{kept}")

    @staticmethod
    def _say(message: str) -> None:
        say(log, message)

    def _log_truncation(self, trainer: pl.Trainer, pl_module) -> None:
        """T*, T_ID and T_DS as metrics to every logger; W&B also gets them with v_hat in its summary, T* as a tag
        and the curves (`_send_curves`)."""
        from pytorch_lightning.loggers import WandbLogger

        gaga = pl_module.truncation.record()
        if not gaga or not trainer.is_global_zero:
            return
        metrics = {"gaga/t_star": float(gaga["t_star"])}
        if self.result is not None:
            for kind, values in (("t_id", self.result.t_id), ("t_ds", self.result.t_ds)):
                metrics.update({f"gaga/{kind}.{block}": float(t) for block, t in values.items() if t is not None})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                v_hat = {f"gaga/v_hat.{k}": v for k, v in gaga["v_hat"].items()}
                run.summary.update({**metrics, **v_hat})
                run.tags = (*run.tags, f"T*={gaga['t_star']}")
                self._send_curves(run)

    # --- computing T* and v_hat -------------------------------------------------------------------

    def evaluator_settings(self, pl_module) -> GaussianitySettings:
        """The settings with the model's own noise: the blocks it projects to zero mean per molecule
        (`DiffusionBackbone.zero_mean_blocks`), so the evaluator tests the distribution the model trains on."""
        return replace(self.settings, zero_com_blocks=tuple(pl_module.zero_mean_blocks))

    def evaluate(self, datamodule, pl_module) -> TStarResult:
        """The evaluator's result on the model's training arrays with the model's noise (cached); sets `result`."""
        settings = self.evaluator_settings(pl_module)

        def training_arrays():
            return pl_module.gaussianity_data(datamodule.ordered_loader("train"), progress=interactive())

        key = self._cache_key(datamodule.identity(), pl_module.gaussianity_identity(), settings)
        self.result = self._evaluate(training_arrays, pl_module, key, settings)
        return self.result

    def _truncation(self, trainer: pl.Trainer, pl_module) -> dict:
        datamodule = trainer.datamodule
        settings = self.evaluator_settings(pl_module)
        if self.t_star == "auto":
            self.evaluate(datamodule, pl_module)
            t_star = self.result.truncation_step(pl_module.schedule.timesteps)
            start = self.result.summary["start_v_hat"]
            mean = self.result.variance.get("mean", {})
        else:
            t_star = int(self.t_star)
            blocks, offsets = pl_module.gaussianity_data(datamodule.ordered_loader("train"), progress=interactive())
            estimate, start = choose_variance(
                blocks, offsets, settings.variance_choice, settings.zero_com_blocks, settings.kept_blocks
            )
            mean = estimate.mean
        v_hat = {key: start[block] for key, block in (("pos", POSITIONS), ("h", FEATURES))}
        truncation = {"t_star": t_star, "v_hat": v_hat}
        if FEATURES in mean:
            truncation["mean"] = {"h": list(mean[FEATURES])}
        return truncation

    @staticmethod
    def _cache_key(data_identity: dict, model_identity: dict, settings: GaussianitySettings) -> str:
        identity = {**data_identity, **model_identity, "settings": settings.to_dict(), "evaluator": EVALUATOR_VERSION}
        return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def _evaluate(self, training_arrays, pl_module, key: str, settings: GaussianitySettings) -> TStarResult:
        """The evaluator's result for this data and model: from the cache, else computed (and cached)."""
        cached = self.cache_dir / f"tstar_{key}.json" if self.cache_dir else None
        result = self._cached_result(cached) if cached is not None and cached.exists() else None
        if result is None:
            blocks, offsets = training_arrays()
            result = find_t_star(blocks, offsets, pl_module.schedule.alpha_bar(), settings, progress=interactive())
            if cached is not None:
                write_text_with_digest(cached, result.to_json())
        if self.out_dir is not None:
            paths = result.save(self.out_dir)
            self._say(f"GAGA: curves and plot in {paths['plot'].parent} ({', '.join(p.name for p in paths.values())})")
        return result

    @staticmethod
    def _cached_result(cached: Path) -> TStarResult | None:
        """The cache's result, or None (with a warning naming the file) when it fails its digest (truncated,
        corrupted, edited, or without one) or does not parse: such a file is never loaded, T* is recomputed."""
        try:
            text = read_verified_text(cached)
        except DigestError as error:
            log.warning("not loading T* cache %s (%s); recomputing", cached, error.problem)
            return None
        try:
            result = TStarResult.from_json(text)
        except (ValueError, TypeError) as error:
            log.warning("ignoring unreadable T* cache %s (%s); recomputing", cached, error)
            return None
        log.info("GAGA: T* from cache %s", cached)
        return result

    def _send_curves(self, run) -> None:
        """The curves as native W&B line plots (one per statistic, its threshold as a constant line), the raw
        table and the PNG; CSV loggers: see out_dir."""
        if self.result is None:
            return
        import wandb

        payload = {}
        for kind, series, threshold in self.result.panels():
            keys = list(series)
            xs = [steps for steps, _ in series.values()]
            ys = [values for _, values in series.values()]
            if threshold is not None:
                steps = self.result.curves["t"]
                keys.append(f"eps = {threshold:g}")
                xs.append([steps[0], steps[-1]])
                ys.append([threshold, threshold])
            title = f"GAGA {kind} over t (T* = {self.result.t_star})"
            payload[f"gaga/curves/{kind}"] = wandb.plot.line_series(xs=xs, ys=ys, keys=keys, title=title, xname="t")
        curves = self.result.curves
        payload["gaga/tstar_curves"] = wandb.Table(
            columns=list(curves), data=[list(row) for row in zip(*curves.values(), strict=True)]
        )
        if self.out_dir is not None and (self.out_dir / "tstar.png").exists():
            payload["gaga/tstar_plot"] = wandb.Image(str(self.out_dir / "tstar.png"))
        run.log(payload)


def _numbers(value) -> str:
    """A v_hat or mean for one line: one number, or a bracketed list for per-column values."""
    if isinstance(value, list | tuple):
        return "[" + " ".join(f"{v:.3g}" for v in value) + "]"
    return f"{value:.4g}"

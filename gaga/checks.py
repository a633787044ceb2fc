"""Settings checked before any work starts: one message per bad value, naming the key, the value and the fix.

Hydra already refuses unknown keys and groups; these rules catch values of the wrong type or range, which would
otherwise fail deep inside a library (or, worse, run) after the data load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class SettingsError(ValueError):
    """A setting that cannot work; the message names it and says what to set instead."""


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return (_integer(value) or isinstance(value, float)) and math.isfinite(value)


_MISSING = object()


def _encoder_inputs(value) -> bool:
    from gaga.models.geoldm import ENCODER_INPUTS

    return value in ENCODER_INPUTS


# key -> (test, what a valid value is); a key missing from the config (another backbone, gaga=off) is not checked
RULES: dict[str, tuple[Callable, str]] = {
    "seed": (_integer, "an integer"),
    "data.batch_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "data.eval_batch_size": (lambda v: v is None or (_integer(v) and v >= 1), "an integer >= 1 or null"),
    "data.num_workers": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "data.subset.train": (lambda v: v is None or (_integer(v) and v >= 1), "an integer >= 1 or null (all)"),
    "data.subset.valid": (lambda v: v is None or (_integer(v) and v >= 1), "an integer >= 1 or null (all)"),
    "data.subset.test": (lambda v: v is None or (_integer(v) and v >= 1), "an integer >= 1 or null (all)"),
    "trainer.max_epochs": (lambda v: v is None or (_integer(v) and v >= -1), "an integer >= 1 (-1: no limit)"),
    "trainer.max_steps": (lambda v: _integer(v) and v >= -1, "an integer >= 1 (-1: no limit)"),
    "trainer.check_val_every_n_epoch": (lambda v: v is None or (_integer(v) and v >= 1), "an integer >= 1"),
    "trainer.log_every_n_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "backbone.net.hidden_nf": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "backbone.net.n_layers": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "backbone.optimizer.lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "backbone.ema_decay": (lambda v: v is None or (_number(v) and 0 <= v < 1), "a number in [0, 1) or null"),
    "backbone.encoder_inputs": (_encoder_inputs, "raw (the released GeoLDM) or normalised"),
    "backbone.autoencoder_sigma": (
        lambda v: v is None or (_number(v) and v > 0),
        "a number > 0 (released: 0.0032) or null",
    ),
    "gaga.t_star": (lambda v: v in ("auto", "off") or _integer(v), "auto, off or a step number in 1..T"),
    "gaga.eps_ds": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "gaga.eps_dep": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "gaga.dataset_molecules": (lambda v: _integer(v) and v >= 2, "an integer >= 2"),
    "n_samples": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "stride": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "eta": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "strain_molecules": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: skip)"),
    "pictures": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: no pictures)"),
    "chain": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: no chain)"),
    "chain_frames": (lambda v: _integer(v) and v >= 2, "an integer >= 2 (the start and the final frame at least)"),
    "wandb": (lambda v: isinstance(v, bool), "true or false"),
}


MANDATORY_HINTS = {"ckpt": "a .ckpt written by train.py, e.g. outputs/<task>/<date>/<time>/checkpoints/last.ckpt"}


def check_settings(cfg: DictConfig) -> None:
    """SettingsError for the first setting of `cfg` that is unset (???) or breaks a rule (types, ranges, T* vs T)."""
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            hint = f" ({MANDATORY_HINTS[key]})" if key in MANDATORY_HINTS else ""
            raise SettingsError(f"{key} is not set; pass {key}=... on the command line{hint}")
    for key, (valid, expected) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        except OmegaConfBaseException as error:  # e.g. an interpolation to a key that does not exist
            raise SettingsError(f"{key}: {str(error).splitlines()[0]}; fix it on the command line or config") from None
        if value is not _MISSING and not valid(value):
            raise SettingsError(
                f"{key}={value!r}: {key} must be {expected}; fix it on the command line or in the config"
            )
    _check_t_star(cfg)
    _check_coupling(cfg)
    _check_chain(cfg)
    _check_predicted_property(cfg)
    _check_resume_path(cfg.get("ckpt_path"))


def _check_t_star(cfg: DictConfig) -> None:
    t_star = OmegaConf.select(cfg, "gaga.t_star", default=None)
    timesteps = OmegaConf.select(cfg, "backbone.schedule.timesteps", default=None)
    if _integer(t_star) and _integer(timesteps) and not 1 <= t_star <= timesteps:
        raise SettingsError(
            f"gaga.t_star={t_star}: T* must lie in 1..{timesteps} (the schedule's T); set gaga.t_star=auto to "
            "measure it, or a step in that range"
        )


def _check_coupling(cfg: DictConfig) -> None:
    """Flow matching's OT coupling with GAGA: gaga.models.flow_matching.check_coupling's rule, before the data load."""
    if not OmegaConf.select(cfg, "backbone.ot_coupling", default=False):
        return
    from gaga.models.flow_matching import check_coupling

    try:
        check_coupling(True, truncated=OmegaConf.select(cfg, "gaga.t_star", default="off") != "off")
    except ValueError as error:
        raise SettingsError(str(error)) from None


def _check_chain(cfg: DictConfig) -> None:
    """sample.py's chains come from its first batch: gaga.sampling.check_chain's rule, before the model loads."""
    if "chain" not in cfg:
        return
    from gaga.sampling import check_chain

    try:
        check_chain(cfg.chain, cfg.chain_frames, cfg.batch_size, cfg.n_samples)
    except ValueError as error:
        raise SettingsError(str(error)) from None


def _check_predicted_property(cfg: DictConfig) -> None:
    """The property predictor predicts the one property data.conditioning names (its model's rule, before the data
    load)."""
    if OmegaConf.select(cfg, "backbone._target_", default=None) != "gaga.models.property_predictor.PropertyPredictor":
        return
    names = list(OmegaConf.select(cfg, "data.conditioning", default=None) or [])
    if len(names) != 1:
        raise SettingsError(
            f"data.conditioning={names}: the property predictor predicts exactly one property; name one, e.g. "
            "data.conditioning=[alpha] (any of alpha gap homo lumo mu Cv)"
        )


def _check_resume_path(path) -> None:
    if isinstance(path, str) and path not in ("auto", "last", "best") and not Path(path).is_file():
        raise SettingsError(f"ckpt_path={path}: no such file; pass a .ckpt file, auto (this run's last.ckpt) or null")


def check_split_sizes(batch_size: int, split_sizes: dict[str, int]) -> None:
    """SettingsError when the batch is larger than the training split (every epoch would be a partial batch)."""
    train = split_sizes.get("train", 0)
    if batch_size > train:
        raise SettingsError(
            f"data.batch_size={batch_size} is larger than the training split ({train} molecules); "
            f"set data.batch_size<={train} or a larger data.subset.train"
        )

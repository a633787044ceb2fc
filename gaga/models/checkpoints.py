"""Checkpoints: what a gaga checkpoint holds besides Lightning's state, and loading one safely.

A checkpoint is a file from anyone. It is read with `torch.load(weights_only=True)` (no code runs from the file), its
digest is checked when it has one, and the model is rebuilt only from gaga's own classes: the top-level
`backbone_target` must be a `gaga.models.` class and every nested `_target_` of the hyperparameters must name gaga
code (`check_targets`, the allow-list; `gaga.models.build.only_gaga_targets` enforces it while rebuilding).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch

import gaga
from gaga.models.build import TRUSTED_PACKAGE, UntrustedTargetError, build, only_gaga_targets
from gaga.models.gradient_guard import NonFiniteLossError

OPTIMIZER_PACKAGE = "torch.optim."
# checkpoints written before backbones recorded their class name it by its `backbone` hyperparameter
LEGACY_BACKBONE_TARGETS = {"edm": "gaga.models.edm.EDM"}


def check_targets(config, source: str, key: str = "") -> None:
    """UntrustedTargetError naming `source` and the key path of the first `_target_` in `config` outside gaga.

    The one exception is the optimiser (`optimizer._target_`, a `torch.optim.` class): a model builds it only when
    it trains, from the training config, never while it is rebuilt from a file.
    """
    if isinstance(config, Mapping):
        target = config.get("_target_")
        allowed = OPTIMIZER_PACKAGE if key.rpartition(".")[2] == "optimizer" else TRUSTED_PACKAGE
        if target is not None and not (isinstance(target, str) and target.startswith(allowed)):
            where = f"{key}._target_" if key else "_target_"
            raise UntrustedTargetError(
                f"{source}: {where} = {target!r} names code outside {allowed.rstrip('.')}; a file is rebuilt only "
                "from gaga's own classes, so it is refused (nothing was imported or run)"
            )
        for name, value in config.items():
            check_targets(value, source, f"{key}.{name}" if key else str(name))
    elif isinstance(config, list | tuple):
        for index, value in enumerate(config):
            check_targets(value, source, f"{key}[{index}]")


class CheckpointError(ValueError):
    """A checkpoint that cannot be sampled from here; the message says why and what to do."""


def read_checkpoint(path: str | Path, backbone: str | None = None, dataset: str | None = None) -> dict:
    """The contents of a gaga checkpoint, read with `torch.load(weights_only=True)` (no code runs from the file),
    after its recorded digest (when it has one) is checked; CheckpointError saying why it cannot be used.

    `backbone` / `dataset`, when given, must match what the checkpoint was trained as.
    """
    from gaga.atomic_files import DigestError, verify_digest

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass ckpt=PATH to a .ckpt written by train.py")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty; pass a .ckpt written by train.py")
    try:
        verify_digest(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except DigestError as error:
        raise CheckpointError(str(error)) from None
    except Exception as error:  # unpickling refused or file damaged; torch's own advice (weights_only=False) is unsafe
        raise CheckpointError(f"{path}: not a loadable gaga checkpoint: {_unreadable_reason(error)}") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    version = checkpoint.get("gaga_version") if isinstance(checkpoint, dict) else None
    if not hparams or "state_dict" not in checkpoint or version is None:
        raise CheckpointError(f"{path}: not written by gaga's train.py (no hyper_parameters / gaga_version)")
    if version.split(".")[0] != gaga.__version__.split(".")[0]:
        raise CheckpointError(
            f"{path}: written by gaga {version}, this is gaga {gaga.__version__} (major versions differ)"
        )
    found = {"backbone": hparams.get("backbone"), "dataset": hparams["dataset"]["name"]}
    for key, wanted in (("backbone", backbone), ("dataset", dataset)):
        if wanted is not None and found[key] != wanted:
            raise CheckpointError(
                f"{path}: a {found[key]} {key} checkpoint, but {key}={wanted} was asked for; pass a checkpoint "
                f"of {key} {wanted}, or ask for {found[key]}"
            )
    return checkpoint


def load_model(
    path: str | Path, device: str | torch.device = "cpu", backbone: str | None = None, dataset: str | None = None
):
    """The model of a gaga checkpoint (see `read_checkpoint`), rebuilt from its class (`backbone_target`) and
    stored hyperparameters."""
    checkpoint = read_checkpoint(path, backbone, dataset)
    hparams = checkpoint["hyper_parameters"]
    target = checkpoint.get("backbone_target") or LEGACY_BACKBONE_TARGETS.get(hparams.get("backbone"))
    if not isinstance(target, str) or not target.startswith("gaga.models."):
        raise CheckpointError(f"{path}: names no gaga backbone class (backbone_target={target!r})")
    with only_gaga_targets(str(path)):
        try:
            check_targets(hparams, str(path))
            model = build({"_target_": target, **legacy_settings(target), **hparams})
        except UntrustedTargetError as error:
            raise CheckpointError(str(error)) from None
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: its hyper_parameters do not describe a gaga model: {error}") from None
    broken = [
        name
        for name, value in checkpoint["state_dict"].items()
        if value.is_floating_point() and not bool(value.isfinite().all())
    ]
    if broken:
        raise CheckpointError(f"{path}: weights with NaN or infinite values ({', '.join(broken[:3])}); not sampled")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit the network its hyper_parameters describe: {error}"
        ) from error
    try:
        if hasattr(model, "set_truncation"):
            model.set_truncation(truncation_record(checkpoint))
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{path}: its truncation entry is not a GAGA truncation record: {error}") from None
    model.source = str(path)
    return model.to(device).eval()


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", backbone: str | None = None, dataset: str | None = None
):
    """`load_model` for sampling: CheckpointError when the checkpoint holds a model that generates nothing (EDM's
    property predictor)."""
    model = load_model(path, device, backbone, dataset)
    if not callable(getattr(model, "sample", None)):
        raise CheckpointError(
            f"{path}: not a generator (its model is {model.hparams.get('backbone')!r}); pass the checkpoint of a "
            "generator (edm, geoldm, flow_matching)"
        )
    return model


def legacy_settings(target: str) -> dict:
    """What checkpoints of the backbone class `target` meant by settings they did not record before those existed
    (the class's `legacy_settings`; none when it has none or cannot be imported: building it then says why)."""
    module, _, name = target.rpartition(".")
    try:
        backbone_class = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return {}
    return dict(getattr(backbone_class, "legacy_settings", {}))


def _unreadable_reason(error: Exception) -> str:
    """One line on why torch.load(weights_only=True) refused a file, without torch's advice to load it unsafely."""
    refused = re.search(r"GLOBAL (\S+)", str(error))
    if refused:
        return f"it holds Python objects ({refused.group(1)}), and gaga never runs code from a checkpoint file"
    return "not a file written by torch.save, or a damaged one (train.py writes .ckpt files)"


def add_entries(checkpoint: dict, model) -> None:
    """What gaga adds to Lightning's checkpoint of `model`: plain-data hyperparameters (loadable with
    weights_only=True), a generator's truncation record (`truncation`), the class to rebuild (`backbone_target`) and
    the writing version; NonFiniteLossError rather
    than a checkpoint with a NaN or infinite weight."""
    bad = [
        name
        for name, value in checkpoint["state_dict"].items()
        if value.is_floating_point() and not value.isfinite().all()
    ]
    if bad:
        raise NonFiniteLossError(f"refusing to write a checkpoint with non-finite weights: {bad[:3]}")
    checkpoint["hyper_parameters"] = plain(dict(model.hparams))
    if hasattr(model, "truncation"):  # generators (a property predictor has none)
        checkpoint["truncation"] = model.truncation.record()
    checkpoint["backbone_target"] = f"{type(model).__module__}.{type(model).__qualname__}"
    checkpoint["gaga_version"] = gaga.__version__


def truncation_record(checkpoint: dict) -> dict | None:
    """A checkpoint's GAGA truncation record (gaga.models.truncation; None: the full trajectory): its own entry, or,
    in checkpoints written before it had one, the `gaga` hyperparameter."""
    if "truncation" in checkpoint:
        return checkpoint["truncation"]
    return checkpoint.get("hyper_parameters", {}).get("gaga")


def plain(value):
    """OmegaConf containers and tuples -> builtin dicts and lists, recursively."""
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return [plain(v) for v in value]
    return value

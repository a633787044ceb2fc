"""Build an object from a flat `_target_` config dict, without Hydra.

Checkpoints store their network and schedule as such dicts, so sample.py rebuilds a model
wherever torch is installed (the GPU machine has no Hydra).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def build(config: Mapping, **extra):
    """`config["_target_"](**rest_of_config, **extra)`; nested values are passed as they are."""
    settings = dict(config)
    target = settings.pop("_target_", None)
    if not isinstance(target, str) or "." not in target:
        raise ValueError(f"config needs a `_target_` naming a class as module.Class, got {target!r} in {settings}")
    module_name, _, name = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import _target_ {target!r}: {error}") from error
    settings.pop("_partial_", None)
    return factory(**settings, **extra)

"""Build an object from a flat `_target_` config dict, without Hydra; refuse targets outside gaga when rebuilding
from a file.

Checkpoints store their network and schedule as such dicts, so sample.py rebuilds a model wherever torch is
installed (the GPU machine has no Hydra). A checkpoint is a file from anyone, so while one is rebuilt
(`only_gaga_targets`), every `_target_` that `build` reaches, however deeply nested, must name a callable defined in
a `gaga.` module; anything else is refused before it is imported, so nothing of the file's choosing runs.
gaga.models.checkpoints reads a whole file's configs first, so that its refusal names the key.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
from collections.abc import Iterator, Mapping

# the key path of the file being rebuilt (e.g. "outputs/x.ckpt"), or None when configs are trusted (Hydra's)
_untrusted_source: contextvars.ContextVar[str | None] = contextvars.ContextVar("untrusted_source", default=None)
TRUSTED_PACKAGE = "gaga."


class UntrustedTargetError(ValueError):
    """A `_target_` in a file that names a callable outside gaga; the message names the file and the key."""


@contextlib.contextmanager
def only_gaga_targets(source: str) -> Iterator[None]:
    """While active, `build` refuses every `_target_` outside gaga (`source` names the file in the message)."""
    token = _untrusted_source.set(source)
    try:
        yield
    finally:
        _untrusted_source.reset(token)


def build(config: Mapping, **extra):
    """`config["_target_"](**rest_of_config, **extra)`; nested values are passed as they are.

    With `_partial_: true` (Hydra's meaning) the target is not called: the result is
    `functools.partial(target, **rest_of_config, **extra)`, for the caller to complete (the optimiser's parameters).
    """
    settings = dict(config)
    target = settings.pop("_target_", None)
    if not isinstance(target, str) or "." not in target:
        raise ValueError(f"config needs a `_target_` naming a class as module.Class, got {target!r} in {settings}")
    partial = bool(settings.pop("_partial_", False))
    source = _untrusted_source.get()
    if source is not None and not target.startswith(TRUSTED_PACKAGE):
        raise UntrustedTargetError(f"{source}: _target_ {target!r} names code outside gaga; refused (nothing was run)")
    module_name, _, name = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import _target_ {target!r}: {error}") from error
    if source is not None and not str(getattr(factory, "__module__", "")).startswith(TRUSTED_PACKAGE):
        # e.g. `gaga.some_module.imported_function`: the name is gaga's, the code is not
        raise UntrustedTargetError(f"{source}: _target_ {target!r} is not defined in gaga; refused (nothing was run)")
    if partial:
        return functools.partial(factory, **settings, **extra)
    return factory(**settings, **extra)

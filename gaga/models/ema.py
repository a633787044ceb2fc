"""Exponential moving averages of a model's modules: the weights validation, sampling and checkpoints' `ema_*` use."""

from __future__ import annotations

import copy

import torch


def add_averages(model: torch.nn.Module, names: tuple[str, ...], decay: float) -> None:
    """An EMA copy `ema_<name>` of each module `name` of `model` (None when `decay` is 0: EMA off)."""
    for name in names:
        averaged = copy.deepcopy(getattr(model, name)).requires_grad_(False) if decay > 0 else None
        setattr(model, f"ema_{name}", averaged)


@torch.no_grad()
def update_averages(model: torch.nn.Module, names: tuple[str, ...], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * current, for every module in `names` (a no-op when EMA is off)."""
    if decay <= 0:
        return
    for name in names:
        averaged, current = getattr(model, f"ema_{name}").parameters(), getattr(model, name).parameters()
        torch._foreach_lerp_(list(averaged), list(current), 1.0 - decay)

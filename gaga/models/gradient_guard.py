"""A training step's gradient guard: exact skipping of steps whose loss or gradient is not finite, and EDM's adaptive
gradient clipping, with one wait for the device per step.

Skipping is exact: the gradients are removed before the optimiser runs (a step on zeroed gradients would still move
AdamW's moments). Clipping follows EDM's `gradient_clipping`: the threshold is 1.5 x mean + 2 x (population) std of
a queue of the last 50 clipped gradient norms, seeded with 3000 so that early steps are never clipped. The queue stays
on the device and is saved in checkpoints (`state` / `load_state`).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# EDM seeds its queue of recent gradient norms with 3000: the first clipping threshold, 1.5 * 3000 + 2 * 0,
# is far above any real norm, so early steps are never clipped; the value then leaves the 50-step window.
INITIAL_GRAD_NORM = 3000.0
GRAD_NORM_WINDOW = 50


class NonFiniteLossError(RuntimeError):
    """Too many consecutive training steps with a NaN or infinite loss."""


def clipping_threshold(grad_norms: torch.Tensor) -> torch.Tensor:
    """EDM's gradient-clipping threshold from its queue of recent norms: 1.5 x mean + 2 x (population) std."""
    return 1.5 * grad_norms.mean() + 2 * grad_norms.std(correction=0)


class GradientGuard(torch.nn.Module):
    """Decides each step whether it is skipped (`check`) and clips the kept ones (`clip`).

    A module only so that its queue of gradient norms (a non-persistent buffer) moves with the model's device.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("grad_norms", torch.tensor([INITIAL_GRAD_NORM], dtype=torch.float64), persistent=False)
        self.in_a_row = 0
        self.total = 0
        self.skipped = False
        self.grad_norm = torch.zeros(())

    def check(self, loss: torch.Tensor, parameters: list[torch.nn.Parameter], step: int, limit: int) -> bool:
        """Whether this step is skipped: its loss or gradient norm is not finite. A skipped step's gradients are
        removed; NonFiniteLossError after `limit` skipped steps in a row (max_consecutive_nonfinite)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        self.grad_norm = torch.nn.utils.get_total_norm(grads).to(loss.device)
        self.skipped = not bool(torch.isfinite(loss) & torch.isfinite(self.grad_norm))
        if not self.skipped:
            self.in_a_row = 0
            return False
        for parameter in parameters:
            parameter.grad = None  # the optimiser leaves parameters without a gradient, and their state, untouched
        self.in_a_row += 1
        self.total += 1
        log.warning(
            "step %d: loss %s, gradient norm %s; step skipped (%d in a row)",
            step,
            float(loss),
            float(self.grad_norm),
            self.in_a_row,
        )
        if self.in_a_row >= limit:
            raise NonFiniteLossError(
                f"{self.in_a_row} training steps in a row had a non-finite loss or gradient; stopping. "
                "Lower the learning rate (backbone.optimizer.lr), keep adaptive_clipping on, or resume from the last "
                "checkpoint (its weights are finite)."
            )
        return True

    def clip(self, parameters: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """EDM's adaptive clipping of this step's gradients, on the device; the values to log."""
        max_norm = clipping_threshold(self.grad_norms)
        # torch's clip_grad_norm_: gradients times min(max_norm / (norm + 1e-6), 1), without reading max_norm
        scale = torch.clamp((self.grad_norm + 1e-6).reciprocal() * max_norm.float(), max=1.0)
        torch._foreach_mul_([p.grad for p in parameters if p.grad is not None], scale)
        clipped = torch.minimum(self.grad_norm.double(), max_norm)
        self.grad_norms = torch.cat([self.grad_norms, clipped.reshape(1)])[-GRAD_NORM_WINDOW:]
        return {"train/grad_norm": self.grad_norm, "train/grad_clipped": (self.grad_norm > max_norm).float()}

    def state(self) -> list[float]:
        """The queue of recent gradient norms, for a checkpoint."""
        return self.grad_norms.tolist()

    def load_state(self, norms: list[float] | None) -> None:
        norms = (norms or [INITIAL_GRAD_NORM])[-GRAD_NORM_WINDOW:]
        self.grad_norms = torch.tensor(norms, dtype=torch.float64, device=self.grad_norms.device)

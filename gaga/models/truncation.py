"""GAGA's truncation of a model, as one value: the step where training stops drawing t and sampling starts (T*, or T
without GAGA), the data moments there, and the closed-form start Gaussian they give.

`Truncation` is stored in checkpoints as the plain record `{"t_star", "v_hat": {"pos", "h"}, "mean": {"h"}}` under
its own entry `truncation` (None without GAGA); checkpoints written before it had one hold it as the hyperparameter
`gaga`, and still load (gaga.models.checkpoints.truncation_record). Bound to the model's schedule, it gives the start
Gaussian at any step (`start_gaussian`: what the NLL's prior term scores) and draws from it (`draw`: where sampling
starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gaga.diffusion.forward import StartGaussian
from gaga.gaussianity import (
    FEATURES,
    POSITIONS,
    VarianceEstimate,
    marginal_mean,
    marginal_variance,
    sample_reference_gaussian,
)


@dataclass(frozen=True)
class Truncation:
    """`start_step`: T* (T on the full trajectory), on the grid of `schedule` (a NoiseSchedule or FlowPath: what
    `alpha2(step)` and `path_scale(step)` give, per block where the blocks move at different rates). `v_hat_pos`,
    `v_hat_h`: the data's variance per degree of freedom of the noise (1: EDM's standard-normal prior); `v_hat_h`
    per column, and `feature_mean` the per-column data mean m, for features that keep their mean
    (gaga.features=kept), whose closed form is N(sqrt(alpha_bar_t) m, v_t). `gaga`: whether GAGA truncated the
    model (False: the full trajectory)."""

    start_step: int
    schedule: torch.nn.Module = field(compare=False, repr=False)
    v_hat_pos: float = 1.0
    v_hat_h: float | tuple[float, ...] = 1.0
    feature_mean: tuple[float, ...] | None = None
    gaga: bool = False

    @classmethod
    def from_record(cls, record: dict | None, schedule: torch.nn.Module) -> Truncation:
        """The truncation a checkpoint's record describes (None: the full trajectory) on `schedule`; ValueError
        when T* lies outside 1..T."""
        if not record:
            return cls(schedule.timesteps, schedule)
        start_step = int(record["t_star"])
        if not 1 <= start_step <= schedule.timesteps:
            raise ValueError(f"T* must lie in 1..{schedule.timesteps} (the schedule's T), got {start_step}")
        v_hat = record.get("v_hat") or {}
        mean = (record.get("mean") or {}).get("h")
        return cls(
            start_step,
            schedule,
            float(v_hat.get("pos", 1.0)),
            _per_column(v_hat.get("h", 1.0)),
            None if mean is None else tuple(float(m) for m in mean),
            gaga=True,
        )

    def record(self) -> dict | None:
        """The plain record a checkpoint stores (None without GAGA)."""
        if not self.gaga:
            return None
        v_hat_h = list(self.v_hat_h) if isinstance(self.v_hat_h, tuple) else self.v_hat_h
        record = {"t_star": self.start_step, "v_hat": {"pos": self.v_hat_pos, "h": v_hat_h}}
        if self.feature_mean is not None:
            record["mean"] = {"h": list(self.feature_mean)}
        return record

    @property
    def estimate(self) -> VarianceEstimate:
        """The start Gaussian's data moments per block in units of the model's own noise (variance 1)."""
        v_hat_h = list(self.v_hat_h) if isinstance(self.v_hat_h, tuple) else self.v_hat_h
        data = {POSITIONS: self.v_hat_pos, FEATURES: v_hat_h}
        mean = {} if self.feature_mean is None else {FEATURES: list(self.feature_mean)}
        return VarianceEstimate("checkpoint", True, data, {POSITIONS: 1.0, FEATURES: 1.0}, mean)

    def alpha_bar(self, step: int) -> dict[str, float]:
        """alpha_bar_t of each block (of its variance-preserving twin, on a flow path) at `step`."""
        return _per_block(self.schedule.alpha2(torch.tensor(step)))

    def path_scale(self, step: int) -> dict[str, float]:
        """s_t of each block, z_t = s_t (sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps): 1 on a
        variance-preserving process."""
        return _per_block(self.schedule.path_scale(step))

    def start_gaussian(self, step: int | None = None) -> StartGaussian:
        """The closed-form Gaussian of z at `step` (default: the start step): variance s_t^2 (alpha_bar_t v_hat +
        1 - alpha_bar_t) per block, mean s_t sqrt(alpha_bar_t) m of features that keep their mean."""
        step = self.start_step if step is None else int(step)
        alpha_bar, scale = self.alpha_bar(step), self.path_scale(step)
        variance = marginal_variance(self.estimate, alpha_bar)
        variance_h = variance[FEATURES] * scale[FEATURES] ** 2
        variance_h = float(variance_h) if np.ndim(variance_h) == 0 else torch.as_tensor(variance_h)
        mean_h = None
        if self.feature_mean is not None:
            mean = marginal_mean(self.estimate, FEATURES, alpha_bar) * scale[FEATURES]
            mean_h = torch.as_tensor(mean, dtype=torch.float32)
        return StartGaussian(step, float(variance[POSITIONS]) * scale[POSITIONS] ** 2, variance_h, mean_h)

    def draw(
        self,
        batch: torch.Tensor,
        feature_width: int,
        zero_mean_blocks: tuple[str, ...],
        num_molecules: int,
        generator: torch.Generator | None = None,
        step: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions [N, 3], features [N, F]) drawn from the start Gaussian at `step` (default: the start step) for
        atoms with molecule index `batch`, the `zero_mean_blocks` projected to zero mean per molecule."""
        step = self.start_step if step is None else int(step)
        z = sample_reference_gaussian(
            batch,
            {POSITIONS: 3, FEATURES: feature_width},
            self.estimate,
            self.alpha_bar(step),
            zero_com_blocks=zero_mean_blocks,
            num_molecules=num_molecules,
            generator=generator,
        )
        scale = self.path_scale(step)
        return z[:, :3] * scale[POSITIONS], z[:, 3:] * scale[FEATURES]


def _per_block(value) -> dict[str, float]:
    """A schedule's value at one step, per block: its own where it is a dict block -> value, else shared."""
    if isinstance(value, dict):
        return {block: float(value[block]) for block in (POSITIONS, FEATURES)}
    return {POSITIONS: float(value), FEATURES: float(value)}


def _per_column(value) -> float | tuple[float, ...]:
    """A v_hat as stored: one float, or one per column."""
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return tuple(float(v) for v in value)
    return float(value)

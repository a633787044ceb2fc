"""GAGA's truncation of a model, as one value: the step where training stops drawing t and sampling starts (T*, or T
without GAGA), and the data moments of the closed-form start Gaussian there.

Stored in checkpoints as the plain record `{"t_star", "v_hat": {"pos", "h"}, "mean": {"h"}}` under its own entry
`truncation` (None without GAGA); checkpoints written before it had one hold it as the hyperparameter `gaga`, and
still load (gaga.models.checkpoints.truncation_record).
"""

from __future__ import annotations

from dataclasses import dataclass

from gaga.gaussianity import FEATURES, POSITIONS, VarianceEstimate


@dataclass(frozen=True)
class Truncation:
    """`start_step`: T* (T on the full trajectory). `v_hat_pos`, `v_hat_h`: the data's variance per degree of freedom
    of the noise (1: EDM's standard-normal prior); `v_hat_h` per column, and `feature_mean` the per-column data mean m,
    for features that keep their mean (gaga.features=kept), whose closed form is N(sqrt(alpha_bar_t) m, v_t).
    `gaga`: whether the model was truncated by GAGA (False: the full trajectory)."""

    start_step: int
    v_hat_pos: float = 1.0
    v_hat_h: float | tuple[float, ...] = 1.0
    feature_mean: tuple[float, ...] | None = None
    gaga: bool = False

    @classmethod
    def from_record(cls, record: dict | None, timesteps: int) -> Truncation:
        """The truncation a checkpoint's `gaga` record describes (None: the full trajectory); ValueError when T*
        lies outside 1..T."""
        if not record:
            return cls(timesteps)
        start_step = int(record["t_star"])
        if not 1 <= start_step <= timesteps:
            raise ValueError(f"T* must lie in 1..{timesteps} (the schedule's T), got {start_step}")
        v_hat = record.get("v_hat") or {}
        mean = (record.get("mean") or {}).get("h")
        return cls(
            start_step,
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


def _per_column(value) -> float | tuple[float, ...]:
    """A v_hat as stored: one float, or one per column."""
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return tuple(float(v) for v in value)
    return float(value)

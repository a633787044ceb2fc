"""The Gaussian conditional path of flow matching (EquiFM): z_t = (1 - t) x_0 + t eps, data at t = 0, noise at t = 1.

Time is continuous; a grid of T steps (step k is t = k / T) lets GAGA's evaluator, T* and `sample.py`'s start and
stride work as they do for diffusion. For GAGA the path has a variance-preserving twin with the same signal-to-noise
ratio, alpha_bar_t = a_t^2 / (a_t^2 + b_t^2): z_t is that twin's z_t times s_t = sqrt(a_t^2 + b_t^2), and the
evaluator's statistics are invariant to a common scale, so T* is found on the twin and v_t = a_t^2 v_hat + b_t^2.
"""

from __future__ import annotations

import numpy as np
import torch


class LinearPath:
    """x_t = (1 - t) x_0 + t eps (the optimal-transport path), on a grid of `timesteps` steps over [0, 1].

    Exposes what GAGA and the backbone interface read from a schedule: `name`, `timesteps`, `precision` (0: the
    path reaches pure data and pure noise), `alpha_bar()` and `alpha2(step)` of the variance-preserving twin,
    and `path_scale(step)`.
    """

    name = "linear_path"
    precision = 0.0

    def __init__(self, timesteps: int = 1000):
        if timesteps < 1:
            raise ValueError(f"the path's grid needs timesteps >= 1, got {timesteps}")
        self.timesteps = int(timesteps)

    @staticmethod
    def coefficients(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, b_t) = (1 - t, t) for continuous times t in [0, 1]."""
        return 1.0 - t, t

    def time(self, step) -> torch.Tensor:
        """Continuous time of grid step(s) `step`."""
        return torch.as_tensor(step, dtype=torch.float64) / self.timesteps

    def alpha2(self, step) -> torch.Tensor:
        """alpha_bar of the variance-preserving twin at grid step(s) `step`: a^2 / (a^2 + b^2)."""
        a, b = self.coefficients(self.time(step))
        return (a**2 / (a**2 + b**2)).float()

    def alpha_bar(self) -> np.ndarray:
        """The twin's alpha_bar at steps 0..T (what GAGA's evaluator takes)."""
        return self.alpha2(torch.arange(self.timesteps + 1)).double().numpy()

    def path_scale(self, step) -> float:
        """s_t = sqrt(a_t^2 + b_t^2): z_t of the path is s_t times z_t of the twin."""
        a, b = self.coefficients(self.time(step))
        return float(torch.sqrt(a**2 + b**2))

"""Discrete noise schedules of the variance-preserving process, as EDM defines them.

A schedule over T steps is a table gamma[0..T] with gamma = -log(alpha^2 / sigma^2) and
alpha^2 + sigma^2 = 1; everything else (alpha, sigma, SNR) is derived from it.
"""

from __future__ import annotations

import re

import numpy as np
import torch


def _clip_alpha_steps(alphas2: np.ndarray, clip_value: float = 0.001) -> np.ndarray:
    """EDM's stabiliser: clip each step ratio alpha^2_t / alpha^2_{t-1} from below."""
    alphas2 = np.concatenate([np.ones(1), alphas2])
    steps = np.clip(alphas2[1:] / alphas2[:-1], clip_value, 1.0)
    return np.cumprod(steps)


def polynomial_alphas2(timesteps: int, power: float, precision: float) -> np.ndarray:
    """alpha^2_t = (1 - (t/T)^p)^2, step-clipped, then squeezed into [precision, 1 - precision]."""
    steps = timesteps + 1
    x = np.linspace(0, steps, steps)
    alphas2 = _clip_alpha_steps((1 - np.power(x / steps, power)) ** 2)
    return (1 - 2 * precision) * alphas2 + precision


def cosine_alphas2(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule with betas clipped at 0.999 (EDM's `cosine`)."""
    steps = timesteps + 2
    x = np.linspace(0, steps, steps)
    alphas_cumprod = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)
    return np.cumprod(1.0 - betas)


def linear_alphas2(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear beta schedule, rescaled to T steps (T=1000 gives the DDPM betas)."""
    scale = 1000.0 / timesteps
    betas = np.linspace(scale * beta_start, scale * beta_end, timesteps + 1)
    betas[0] = 0.0
    return np.cumprod(1.0 - np.clip(betas, 0, 0.999))


class NoiseSchedule(torch.nn.Module):
    """A fixed schedule over integer steps 0..T, stored as the buffer `gamma`.

    `name` is `polynomial_<p>` (e.g. `polynomial_2`), `cosine` or `linear`; `precision`
    is EDM's clip that keeps alpha^2 and sigma^2 away from 0 (used by polynomial schedules).
    """

    def __init__(self, name: str = "polynomial_2", timesteps: int = 1000, precision: float = 1e-5):
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"schedule.timesteps must be >= 1, got {timesteps}")
        self.name, self.timesteps, self.precision = name, int(timesteps), float(precision)
        alphas2 = self._alphas2(name, self.timesteps, self.precision)
        gamma = -(np.log(alphas2) - np.log(1.0 - alphas2))
        self.register_buffer("gamma_table", torch.tensor(gamma, dtype=torch.float64), persistent=False)

    @staticmethod
    def _alphas2(name: str, timesteps: int, precision: float) -> np.ndarray:
        poly = re.fullmatch(r"polynomial_(\d+(?:\.\d+)?)", name)
        if poly:
            return polynomial_alphas2(timesteps, float(poly.group(1)), precision)
        if name == "cosine":
            return np.clip(cosine_alphas2(timesteps), precision, 1 - precision)
        if name == "linear":
            return np.clip(linear_alphas2(timesteps), precision, 1 - precision)
        raise ValueError(
            f"unknown noise schedule {name!r}: use polynomial_<power> (e.g. polynomial_2), cosine or linear"
        )

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma at integer steps t (any shape, long or float holding integers)."""
        return self.gamma_table.to(t.device)[t.long()].float()

    def alpha2(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-self.gamma(t))

    def sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gamma(t))

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha2(t).sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma2(t).sqrt()

    def path_scale(self, step) -> float:
        """s_t with z_t = s_t (alpha_t x + sigma_t eps): 1 on the variance-preserving process (a FlowPath's is not)."""
        return 1.0

    def alpha_bar(self) -> np.ndarray:
        """alpha^2 for every step 0..T as float64 numpy (GAGA's alpha_bar_t)."""
        return torch.sigmoid(-self.gamma_table).numpy()

    def extra_repr(self) -> str:
        return f"name={self.name}, timesteps={self.timesteps}, precision={self.precision:g}"

"""The Gaussian conditional paths of flow matching (EquiFM): data at t = 0, noise at t = 1, one path per block.

Each block b (coordinates, atom features) moves on z_t = a_b(t) x_0 + b_b(t) eps:
- coordinates on the linear path a = 1 - t, b = sigma_min + (1 - sigma_min) t (EquiFM: sigma_min = 1e-4);
- atom features on EquiFM's variance-preserving path (kind "hybrid"): a = alpha_t = exp(-T(t) / 2),
  b = sqrt(1 - alpha_t^2), T(t) = 9.95 t^2 + 0.1 t (beta from 0.1 to 20); the network's feature output regresses the
  reparameterised target alpha_t x_0 - alpha_t^2 z_t and the velocity is M_t times it,
  M_t = -beta_t / (2 (1 - e^(-T(t)) + 1e-5)) (EquiFM's sampler, its 1e-5 included);
- or on the linear path too (kind "linear": EquiFM's ablation, and every checkpoint written before the kinds existed).

Time is continuous; a grid of T steps (step k is t = k / T) lets GAGA's evaluator, T* and `sample.py`'s start and
stride work as they do for diffusion. For GAGA each block has a variance-preserving twin with the same
signal-to-noise ratio, alpha_bar_b(t) = a^2 / (a^2 + b^2): z_t is that twin's z_t times s_b(t) = sqrt(a^2 + b^2), and
the evaluator's statistics are invariant to a common scale, so T* is found on the twins (one alpha_bar per block) and
the closed form of block b is N(s_b sqrt(alpha_bar_b) m, s_b^2 (alpha_bar_b v_hat + 1 - alpha_bar_b)).
"""

from __future__ import annotations

import numpy as np
import torch

# the block names of gaga.gaussianity.blocks (which imports gaga.diffusion, so they are not imported from there;
# tests/test_flow_matching.py checks that they agree)
POSITIONS, FEATURES = "positions", "features"
BETA_MIN, BETA_MAX = 0.1, 20.0  # EquiFM's variance-preserving feature path
M_EPSILON = 1e-5  # EquiFM's sampler: M_t = -beta_t / (2 (1 - e^(-T(t)) + 1e-5)), finite at t = 0
KINDS = ("hybrid", "linear")


class LinearBlock:
    """a = 1 - t, b = sigma_min + (1 - sigma_min) t; the network outputs the velocity a' x_0 + b' eps itself."""

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = float(sigma_min)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 - t, self.sigma_min + (1.0 - self.sigma_min) * t

    def target(self, x0: torch.Tensor, eps: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of the network's output: the conditional velocity -x_0 + (1 - sigma_min) eps."""
        return (1.0 - self.sigma_min) * eps - x0

    def velocity(self, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return output


class VariancePreservingBlock:
    """EquiFM's feature path: a = alpha_t = exp(-T(t) / 2), b = sqrt(1 - alpha_t^2), reparameterised output.

    Times are clamped to [0, 1]: dopri5's last step evaluates the field past its end (t < 0), where T(t) < 0 would
    make b imaginary and M_t cross a pole at t = -1e-4; there the field is that of t = 0.
    """

    @staticmethod
    def integrated_beta(t: torch.Tensor) -> torch.Tensor:
        """T(t) = (beta_max - beta_min) t^2 / 2 + beta_min t, for t clamped to [0, 1]."""
        t = t.clamp(0.0, 1.0)
        return 0.5 * (BETA_MAX - BETA_MIN) * t**2 + BETA_MIN * t

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.exp(-0.5 * self.integrated_beta(t))
        return alpha, torch.sqrt(1.0 - alpha**2)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """alpha_t x_0 - alpha_t^2 z_t (EquiFM's reparameterisation: the velocity is M_t times it)."""
        alpha, _ = self.coefficients(t)
        return alpha * x0 - alpha**2 * z_t

    def multiplier(self, t: torch.Tensor) -> torch.Tensor:
        """M_t = -beta_t / (2 (1 - e^(-T(t)) + 1e-5))."""
        beta = BETA_MIN + (BETA_MAX - BETA_MIN) * t.clamp(0.0, 1.0)
        return -0.5 * beta / (1.0 - torch.exp(-self.integrated_beta(t)) + M_EPSILON)

    def velocity(self, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.multiplier(t) * output


class FlowPath:
    """Per-block conditional paths on a grid of `timesteps` steps over [0, 1].

    Args:
        timesteps: the grid (step k is t = k / T) of GAGA's T*, the sampler's start and stride.
        kind: "hybrid" (EquiFM: features on the variance-preserving path) or "linear" (features linear too).
        sigma_min: the coordinates' (and linear features') noise scale at t = 0 (EquiFM: 1e-4).

    Exposes what GAGA and the backbone read from a schedule: `name`, `timesteps`, `precision`, `alpha_bar()` (a
    dict block -> alpha_bar of its twin at steps 0..T), `alpha2(step)` and `path_scale(step)` (dicts block -> value).
    """

    def __init__(self, timesteps: int = 1000, kind: str = "hybrid", sigma_min: float = 1e-4):
        if timesteps < 1:
            raise ValueError(f"the path's grid needs timesteps >= 1, got {timesteps}")
        if kind not in KINDS:
            raise ValueError(f"backbone.schedule.kind={kind!r}: use one of {list(KINDS)}")
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"backbone.schedule.sigma_min must lie in [0, 1), got {sigma_min}")
        self.timesteps, self.kind, self.precision = int(timesteps), kind, float(sigma_min)
        self.name = f"flow_{kind}"
        self.blocks = {
            POSITIONS: LinearBlock(sigma_min),
            FEATURES: VariancePreservingBlock() if kind == "hybrid" else LinearBlock(sigma_min),
        }

    def time(self, step) -> torch.Tensor:
        """Continuous time of grid step(s) `step`."""
        return torch.as_tensor(step, dtype=torch.float64) / self.timesteps

    def coefficients(self, block: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, b_t) of `block` at continuous times t."""
        return self.blocks[block].coefficients(t)

    def alpha2(self, step) -> dict[str, torch.Tensor]:
        """alpha_bar of each block's variance-preserving twin at grid step(s) `step`: a^2 / (a^2 + b^2)."""
        coefficients = {block: self.coefficients(block, self.time(step)) for block in self.blocks}
        return {block: (a**2 / (a**2 + b**2)).float() for block, (a, b) in coefficients.items()}

    def alpha_bar(self) -> dict[str, np.ndarray]:
        """Each twin's alpha_bar at steps 0..T (what GAGA's evaluator takes)."""
        return {block: value.double().numpy() for block, value in self.alpha2(torch.arange(self.timesteps + 1)).items()}

    def path_scale(self, step) -> dict[str, float]:
        """s_t = sqrt(a_t^2 + b_t^2) per block: z_t of the path is s_t times z_t of its twin."""
        scales = {}
        for block in self.blocks:
            a, b = self.coefficients(block, self.time(step))
            scales[block] = float(torch.sqrt(a**2 + b**2))
        return scales

    def noised(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, block: str) -> torch.Tensor:
        """z_t = a x_0 + b eps of `block` (t broadcast against the rows)."""
        a, b = self.coefficients(block, t)
        return a.to(x0) * x0 + b.to(x0) * eps

    def field(self, net) -> PathField:
        """The velocity field dz/dt of a network trained on this path (called like a denoiser)."""
        return PathField(self, net)


class LinearPath(FlowPath):
    """z_t = (1 - t) x_0 + t eps for both blocks: the path of checkpoints written before `FlowPath` had kinds."""

    def __init__(self, timesteps: int = 1000):
        super().__init__(timesteps, "linear", 0.0)
        self.name = "linear_path"  # the T* caches of such runs stay valid


class PathField(torch.nn.Module):
    """v(pos_t, h_t, t, batch): the network's outputs turned into each block's velocity (EquiFM's M_t on features)."""

    def __init__(self, path: FlowPath, net):
        super().__init__()
        self.path, self.net = path, net

    def forward(self, pos, h, t, batch):
        out_pos, out_h = self.net(pos, h, t, batch)
        t_atom = t[batch, None].to(torch.float64)
        v_pos = self.path.blocks[POSITIONS].velocity(out_pos, pos, t_atom.to(pos.dtype))
        v_h = self.path.blocks[FEATURES].velocity(out_h.double(), h.double(), t_atom).to(out_h.dtype)
        return v_pos, v_h

"""EDM's forward (noising) process on PyG-style batches: zero-CoM projection, noise, normalisation, z_t, and the
Gaussian of z_t at one step that a truncated chain starts from (`StartGaussian`).

A batch is flat: `pos` [N, 3], `h` [N, F] and `batch` [N] (molecule index of each atom, sorted, 0..B-1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch_geometric.utils import scatter

from gaga.diffusion.schedules import NoiseSchedule


def remove_mean(x: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """Subtract each molecule's mean over its atoms (the zero centre-of-mass projection)."""
    mean = scatter(x, batch, dim=0, dim_size=num_graphs, reduce="mean")
    return x - mean[batch]


def project_state(
    pos: torch.Tensor, h: torch.Tensor, batch: torch.Tensor, num_graphs: int | None, zero_mean_features: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A state (pos, h) projected onto the space the model lives in: coordinates at zero centre of mass, features
    zero-meaned per molecule too with `zero_mean_features`."""
    pos = remove_mean(pos, batch, num_graphs)
    return pos, remove_mean(h, batch, num_graphs) if zero_mean_features else h


def state_dimensions(
    num_atoms: torch.Tensor, pos_width: int, h_width: int, zero_mean_features: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Degrees of freedom per molecule of (coordinates, features): (N - 1) x width for a block projected to zero
    mean, N x width otherwise."""
    return (num_atoms - 1) * pos_width, (num_atoms - int(zero_mean_features)) * h_width


def sample_zero_com_noise(
    like: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Standard Gaussian noise shaped like `like`, projected to zero mean per molecule."""
    noise = torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    return remove_mean(noise, batch, num_graphs)


def sample_noise(
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int | None = None,
    zero_mean_features: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM's combined noise: zero-CoM Gaussian for coordinates, standard Gaussian for features.

    `zero_mean_features=True` projects the feature noise to zero mean per molecule as well
    (what the GAGA reference code does).
    """
    eps_pos = sample_zero_com_noise(pos, batch, num_graphs, generator)
    if zero_mean_features:
        eps_h = sample_zero_com_noise(h, batch, num_graphs, generator)
    else:
        eps_h = torch.randn(h.shape, dtype=h.dtype, device=h.device, generator=generator)
    return eps_pos, eps_h


def diffuse(
    pos: torch.Tensor,
    h: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
    batch: torch.Tensor,
    zero_mean_features: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw z_t = alpha_t x + sigma_t eps for integer steps `t` [B]; returns (pos_t, h_t, eps_pos, eps_h).

    `pos` must already be zero-CoM per molecule (then so is pos_t).
    """
    eps_pos, eps_h = sample_noise(pos, h, batch, t.shape[0], zero_mean_features, generator)
    alpha, sigma = schedule.alpha(t)[batch, None], schedule.sigma(t)[batch, None]
    return alpha * pos + sigma * eps_pos, alpha * h + sigma * eps_h, eps_pos, eps_h


# EDM's normalize_factors for (positions, one-hot, charges): the one place these numbers live.
EDM_NORM_VALUES = (1.0, 4.0, 10.0)


@dataclass(frozen=True)
class StartGaussian:
    """The closed-form Gaussian of the noised state z at `step`: coordinates N(0, variance_pos) per degree of
    freedom; features N(0, variance_h) (zero-meaned features, or EDM's standard normal), or per column
    N(mean_h, variance_h) with `mean_h` [F] and `variance_h` [F] for features that keep their mean. The default at
    step T is EDM's prior, N(0, I)."""

    step: int
    variance_pos: float = 1.0
    variance_h: float | torch.Tensor = 1.0
    mean_h: torch.Tensor | None = None


@dataclass(frozen=True)
class Normalizer:
    """EDM's feature scaling and the layout of h: [one-hot / onehot_scale, (charge / charge_scale)].

    EDM's `normalize_factors` [1, 4, 10] are (position_scale, onehot_scale, charge_scale) and its
    `norm_biases` (None, 0, 0) are (-, onehot_bias, charge_bias); positions get no bias so that they
    stay at zero centre of mass. `include_charges` adds the atomic charge as the last column of h
    (EDM's default for QM9; the GAGA runs leave it out).
    """

    position_scale: float = EDM_NORM_VALUES[0]
    onehot_scale: float = EDM_NORM_VALUES[1]
    charge_scale: float = EDM_NORM_VALUES[2]
    onehot_bias: float = 0.0
    charge_bias: float = 0.0
    include_charges: bool = False

    @classmethod
    def from_edm(
        cls,
        norm_values: Sequence[float],
        norm_biases: Sequence[float | None] = (None, 0.0, 0.0),
        include_charges: bool = False,
    ) -> Normalizer:
        """Build from EDM's (normalize_factors, norm_biases) triples."""
        if len(norm_values) != 3 or len(norm_biases) != 3:
            raise ValueError(
                f"normalize_factors and norm_biases need 3 entries (positions, one-hot, charges), "
                f"got {list(norm_values)} and {list(norm_biases)}"
            )
        if norm_biases[0] not in (None, 0, 0.0):
            raise ValueError(f"norm_biases[0] (positions) must be None or 0 to keep zero CoM, got {norm_biases[0]}")
        return cls(*map(float, norm_values), float(norm_biases[1]), float(norm_biases[2]), include_charges)

    @classmethod
    def from_config(cls, config: dict | None) -> Normalizer:
        """From a backbone's `normalizer: {norm_values, include_charges}` (EDM's [1, 4, 10] by default)."""
        config = dict(config or {})
        return cls.from_edm(
            config.get("norm_values", EDM_NORM_VALUES), include_charges=config.get("include_charges", False)
        )

    def num_features(self, num_atom_types: int) -> int:
        """Width of h for a dataset with `num_atom_types` one-hot columns."""
        return num_atom_types + int(self.include_charges)

    def encode(
        self, pos: torch.Tensor, onehot: torch.Tensor, charges: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale Angstrom positions, one-hot [N, K] and integer charges [N] into (pos, h); h in the positions' float
        dtype (float32 for integer positions)."""
        dtype = pos.dtype if pos.is_floating_point() else torch.float32
        columns = [(onehot.to(dtype) - self.onehot_bias) / self.onehot_scale]
        if self.include_charges:
            if charges is None:
                raise ValueError("Normalizer.include_charges is set but no charges were given: pass charges=Z")
            columns.append((charges.to(dtype).reshape(-1, 1) - self.charge_bias) / self.charge_scale)
        return pos / self.position_scale, torch.cat(columns, dim=1)

    def split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unscaled (one-hot, charges) columns of h; charges is None without include_charges."""
        num_types = h.shape[1] - int(self.include_charges)
        onehot = h[:, :num_types] * self.onehot_scale + self.onehot_bias
        charges = h[:, num_types] * self.charge_scale + self.charge_bias if self.include_charges else None
        return onehot, charges

    def log_volume_change(self, num_atoms: torch.Tensor) -> torch.Tensor:
        """log |det| of the position scaling on the (N-1)*3-dimensional zero-CoM subspace, per molecule."""
        return -(num_atoms - 1) * 3 * math.log(self.position_scale)

    def check_against(self, schedule: NoiseSchedule, num_stdevs: float = 8.0) -> None:
        """EDM's guard: 1 / max(onehot_scale, charge_scale) must exceed num_stdevs * sigma_0."""
        sigma_0 = float(schedule.sigma(torch.zeros(1, dtype=torch.long)))
        largest = max(self.onehot_scale, self.charge_scale)
        if sigma_0 * num_stdevs > 1.0 / largest:
            raise ValueError(
                f"normalisation factor {largest} is too large for this noise schedule (sigma_0 = {sigma_0:.5f}): "
                f"lower normalize_factors or the schedule precision"
            )

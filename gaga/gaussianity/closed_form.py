"""Closed-form Gaussian marginals of the VP forward process on zero-meaned molecule data, and their sampler.

mu_t = 0 (zero-mean preprocessing) and v_t = alpha_bar_t v_hat + (1 - alpha_bar_t) noise per component; with
unit noise this is the paper's v_t = 1 - alpha_bar_t (1 - v_hat). GAGA replaces x_T* by a draw from N(0, v_T*).
"""

from __future__ import annotations

import numpy as np
import torch

from gaga.gaussianity.blocks import POSITIONS
from gaga.gaussianity.variance import VarianceEstimate


def marginal_variance(estimate: VarianceEstimate, alpha_bar_t) -> dict[str, np.ndarray | float]:
    """v_t per component (scalar or array like `alpha_bar_t`): alpha_bar_t * v_hat + (1 - alpha_bar_t) * noise."""
    alpha_bar_t = np.asarray(alpha_bar_t, dtype=np.float64)
    return {name: alpha_bar_t * v + (1.0 - alpha_bar_t) * estimate.noise[name] for name, v in estimate.data.items()}


def marginal_moments(estimate: VarianceEstimate, alpha_bar_t: float) -> dict[str, tuple[float, float]]:
    """(mu_t, v_t) per component at one step; mu_t is 0 because every block is zero-meaned per molecule."""
    return {name: (0.0, float(v)) for name, v in marginal_variance(estimate, alpha_bar_t).items()}


def reference_std(estimate: VarianceEstimate, alpha_bar_t: float) -> dict[str, float]:
    """Per-component scale s of the reference sampler: s^2 = v_t / noise (see sample_reference_gaussian)."""
    variance = marginal_variance(estimate, alpha_bar_t)
    return {name: float(np.sqrt(v / estimate.noise[name])) for name, v in variance.items()}


def sample_reference_gaussian(batch: torch.Tensor, widths: dict[str, int], estimate: VarianceEstimate,
                              alpha_bar_t: float, zero_com_blocks=(POSITIONS,), num_molecules: int | None = None,
                              generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """A draw of z_T* ~ N(0, v_T*) for atoms with molecule index `batch`: [n_atoms, sum(widths)], blocks in order.

    Block c is s_c * eps with s_c^2 = v_t / noise_c (reference_std). For zero-CoM blocks eps is standard normal
    projected to zero centre of mass per molecule, so s_c^2 is the variance per translation-free degree of freedom
    and the per-entry variance is s_c^2 (N - 1) / N; either way the estimator behind `estimate` has expectation
    v_t on these samples (exactly for free blocks; for zero-CoM blocks when molecule sizes follow the data).
    With a reference_rms estimate (noise 1) this is QuJX/GAGA's sampler: zero-CoM noise * sqrt(alpha^2 v + sigma^2).
    """
    batch = batch.long()
    num_molecules = int(batch.max()) + 1 if num_molecules is None else num_molecules
    counts = torch.bincount(batch, minlength=num_molecules).clamp(min=1).to(dtype).unsqueeze(1)
    scales = reference_std(estimate, alpha_bar_t)
    unknown = [name for name in widths if estimate.component(name) not in scales]
    if unknown:
        raise ValueError(f"sample_reference_gaussian: blocks {unknown} have no variance in the estimate "
                         f"(it covers {sorted(scales)}); estimate the variance with those blocks included")
    parts = []
    for name, width in widths.items():
        eps = torch.randn(len(batch), width, generator=generator, dtype=dtype, device=batch.device)
        if name in zero_com_blocks:
            means = torch.zeros(num_molecules, width, dtype=dtype, device=batch.device).index_add_(0, batch, eps)
            eps = eps - (means / counts)[batch]
        parts.append(eps * scales[estimate.component(name)])
    return torch.cat(parts, dim=1)

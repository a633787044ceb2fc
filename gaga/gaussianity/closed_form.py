"""Closed-form Gaussian marginals of the VP forward process on molecule data, and their sampler.

Zero-meaned blocks (the paper): mu_t = 0 and v_t = alpha_bar_t v_hat + (1 - alpha_bar_t) noise per component; with
unit noise this is the paper's v_t = 1 - alpha_bar_t (1 - v_hat). Blocks that keep their mean (gaga.features=kept):
per column j, mu_t,j = sqrt(alpha_bar_t) m_j and v_t,j = alpha_bar_t v_j + (1 - alpha_bar_t) (VarianceEstimate.mean).
GAGA replaces x_T* by a draw from N(mu_T*, v_T*) (gaga.diffusion.forward.StartGaussian: that Gaussian at one step).
alpha_bar may be one value (array) for every block, or a dict block -> value (array) for paths whose blocks move at
different rates (flow matching's hybrid path: `block_alpha_bar`).
"""

from __future__ import annotations

import numpy as np
import torch

from gaga.gaussianity.blocks import POSITIONS
from gaga.gaussianity.variance import VarianceEstimate


def block_alpha_bar(alpha_bar, block: str):
    """alpha_bar of `block` (or of a pooled component): `alpha_bar` itself, or its entry when it is a dict
    block -> alpha_bar (a path whose blocks move at different rates)."""
    if not isinstance(alpha_bar, dict):
        return alpha_bar
    if block not in alpha_bar:
        raise ValueError(
            f"this path gives each block its own alpha_bar ({sorted(alpha_bar)}), so the variance must be per block, "
            f"not {block!r}: use gaga.variance=exact"
        )
    return alpha_bar[block]


def alpha_bar_at(alpha_bar, steps):
    """alpha_bar[steps], per block when alpha_bar is a dict."""
    if isinstance(alpha_bar, dict):
        return {block: np.asarray(values, dtype=np.float64)[steps] for block, values in alpha_bar.items()}
    return np.asarray(alpha_bar, dtype=np.float64)[steps]


def marginal_variance(estimate: VarianceEstimate, alpha_bar_t) -> dict[str, np.ndarray | float]:
    """v_t per component: alpha_bar_t * v_hat + (1 - alpha_bar_t) * noise, shaped alpha_bar_t's shape followed by
    the component's columns (none for a scalar v_hat; one per column for a block that keeps its mean)."""
    variances = {}
    for name, v in estimate.data.items():
        v = np.asarray(v, dtype=np.float64)
        alpha_bar_c = np.asarray(block_alpha_bar(alpha_bar_t, name), dtype=np.float64)
        a = alpha_bar_c.reshape(alpha_bar_c.shape + (1,) * v.ndim)
        variances[name] = a * v + (1.0 - a) * estimate.noise[name]
    return variances


def marginal_mean(estimate: VarianceEstimate, block: str, alpha_bar_t: float) -> np.ndarray | float:
    """mu_t of `block` at one step: sqrt(alpha_bar_t) times the data's column mean (0 for zero-meaned blocks)."""
    if block not in estimate.mean:
        return 0.0
    return np.sqrt(block_alpha_bar(alpha_bar_t, block)) * np.asarray(estimate.mean[block], dtype=np.float64)


def reference_std(estimate: VarianceEstimate, alpha_bar_t: float) -> dict[str, np.ndarray | float]:
    """Per-component scale s of the reference sampler: s^2 = v_t / noise (see sample_reference_gaussian)."""
    variance = marginal_variance(estimate, alpha_bar_t)
    return {name: np.sqrt(v / estimate.noise[name]) for name, v in variance.items()}


def sample_reference_gaussian(
    batch: torch.Tensor,
    widths: dict[str, int],
    estimate: VarianceEstimate,
    alpha_bar_t: float,
    zero_com_blocks=(POSITIONS,),
    num_molecules: int | None = None,
    generator: torch.Generator | None = None,
    dtype=torch.float32,
) -> torch.Tensor:
    """A draw of z_T* ~ N(0, v_T*) for atoms with molecule index `batch`: [n_atoms, sum(widths)], blocks in order.

    Block c is s_c * eps with s_c^2 = v_t / noise_c (reference_std). For zero-CoM blocks eps is standard normal
    projected to zero centre of mass per molecule, so s_c^2 is the variance per translation-free degree of freedom
    and the per-entry variance is s_c^2 (N - 1) / N; either way the estimator behind `estimate` has expectation
    v_t on these samples (exactly for free blocks; for zero-CoM blocks when molecule sizes follow the data).
    With a reference_rms estimate (noise 1) this is QuJX/GAGA's sampler: zero-CoM noise * sqrt(alpha^2 v + sigma^2).
    A block that keeps its mean gets its per-column scale and the mean sqrt(alpha_bar_t) m (`marginal_mean`).
    """
    batch = batch.long()
    num_molecules = int(batch.max()) + 1 if num_molecules is None else num_molecules
    counts = torch.bincount(batch, minlength=num_molecules).clamp(min=1).to(dtype).unsqueeze(1)
    scales = reference_std(estimate, alpha_bar_t)
    unknown = [name for name in widths if estimate.component(name) not in scales]
    if unknown:
        raise ValueError(
            f"sample_reference_gaussian: blocks {unknown} have no variance in the estimate "
            f"(it covers {sorted(scales)}); estimate the variance with those blocks included"
        )
    parts = []
    for name, width in widths.items():
        eps = torch.randn(len(batch), width, generator=generator, dtype=dtype, device=batch.device)
        if name in zero_com_blocks:
            means = torch.zeros(num_molecules, width, dtype=dtype, device=batch.device).index_add_(0, batch, eps)
            eps = eps - (means / counts)[batch]
        scale = torch.as_tensor(scales[estimate.component(name)], dtype=dtype, device=batch.device)
        mean = torch.as_tensor(marginal_mean(estimate, name, alpha_bar_t), dtype=dtype, device=batch.device)
        parts.append(eps * scale + mean if name in estimate.mean else eps * scale)
    return torch.cat(parts, dim=1)

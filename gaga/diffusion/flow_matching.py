"""Flow matching on the linear Gaussian path (EquiFM, Song et al. 2023) on PyG-style batches.

The velocity regression loss, EquiFM's equivariant optimal-transport coupling of noise to data, ODE sampling
(Euler, Heun, adaptive through the optional `torchdiffeq`) and the likelihood by the instantaneous change of
variables. A velocity field is called like a denoiser: v(pos_t, h_t, t, batch) -> (v_pos, v_h), t in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from gaga.diffusion.forward import remove_mean, sample_noise
from gaga.diffusion.losses import Denoiser, per_molecule_sum


def velocity_loss(
    velocity: Denoiser,
    pos: torch.Tensor,
    h: torch.Tensor,
    noise: tuple[torch.Tensor, torch.Tensor],
    t: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
) -> torch.Tensor:
    """||v(z_t, t) - (eps - x_0)||^2 / ((3 + F) * N_max) per molecule [B], with z_t = (1 - t) x_0 + t eps.

    `t` [B] are times in [0, 1]; `noise` = (eps_pos, eps_h) in the model's zero-mean subspaces. The divisor is
    EDM's (each molecule's error over the padded size of the batch), so the scale matches EDM's l2 loss.
    """
    eps_pos, eps_h = noise
    t_atom = t[batch, None]
    pos_t, h_t = (1 - t_atom) * pos + t_atom * eps_pos, (1 - t_atom) * h + t_atom * eps_h
    v_pos, v_h = velocity(pos_t, h_t, t, batch)
    error = per_molecule_sum((v_pos - (eps_pos - pos)) ** 2, batch, num_graphs)
    error = error + per_molecule_sum((v_h - (eps_h - h)) ** 2, batch, num_graphs)
    num_atoms = torch.bincount(batch, minlength=num_graphs)
    return error / ((pos.shape[1] + h.shape[1]) * num_atoms.max())


def kabsch_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The proper rotation R minimising ||source @ R.T - target|| for centred [n, 3] point sets."""
    u, _, vt = np.linalg.svd(source.T @ target)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    return (u @ np.diag([1.0, 1.0, sign]) @ vt).T


def ot_couple(
    pos: torch.Tensor, types: torch.Tensor, eps_pos: torch.Tensor, eps_h: torch.Tensor, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """EquiFM's equivariant OT coupling: per molecule, noise rows re-assigned to atoms and the noise rotated.

    Within each atom type the noise rows are matched to the atoms by the Hungarian algorithm on squared
    distances (scipy), then the noise coordinates are rotated onto the data by Kabsch. Noise features follow
    their rows. Molecules are processed on the CPU, one by one.
    """
    from scipy.optimize import linear_sum_assignment

    x, kinds, noise = pos.detach().cpu().double().numpy(), types.cpu().numpy(), eps_pos.detach().cpu().double().numpy()
    order = np.arange(len(x))
    bounds = np.concatenate([[0], np.cumsum(torch.bincount(batch).cpu().numpy())])
    rotated = noise.copy()
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        for kind in np.unique(kinds[start:stop]):
            rows = start + np.flatnonzero(kinds[start:stop] == kind)
            cost = ((x[rows, None, :] - noise[None, rows, :]) ** 2).sum(-1)
            _, columns = linear_sum_assignment(cost)
            order[rows] = rows[columns]
        matched = noise[order[start:stop]]
        rotated[start:stop] = matched @ kabsch_rotation(matched, x[start:stop]).T
    index = torch.from_numpy(order).to(eps_h.device)
    return torch.from_numpy(rotated).to(eps_pos), eps_h[index]


def integrate(
    velocity: Denoiser,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    times: list[float],
    method: str,
    project: Callable,
    on_step: Callable[[], None] | None = None,
    keep_frame: Callable[[float, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integrate dz/dt = v from times[0] down to times[-1] with Euler or Heun steps; returns (pos, h, NFE).

    `keep_frame`, when given, receives (time, pos, h) at times[0] and after every step."""
    num_graphs = int(batch.max()) + 1
    evaluations = 0

    def field(pos_t, h_t, t: float):
        nonlocal evaluations
        evaluations += 1
        return velocity(pos_t, h_t, torch.full((num_graphs,), t, device=pos_t.device), batch)

    if keep_frame is not None:
        keep_frame(times[0], pos, h)
    for t, s in zip(times[:-1], times[1:], strict=True):
        dt = s - t
        v_pos, v_h = field(pos, h, t)
        if method == "heun":
            pred_pos, pred_h = project(pos + dt * v_pos, h + dt * v_h)
            w_pos, w_h = field(pred_pos, pred_h, s)
            v_pos, v_h = 0.5 * (v_pos + w_pos), 0.5 * (v_h + w_h)
        pos, h = project(pos + dt * v_pos, h + dt * v_h)
        if on_step is not None:
            on_step()
        if keep_frame is not None:
            keep_frame(s, pos, h)
    return pos, h, evaluations


def integrate_adaptive(
    velocity: Denoiser,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    t_start: float,
    project: Callable,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    keep_times: list[float] | None = None,
    keep_frame: Callable[[float, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integrate from t_start to 0 with torchdiffeq's adaptive dopri5; returns (pos, h, NFE).

    `keep_frame`, when given, receives (time, pos, h) at each of `keep_times` (from t_start down to 0): dopri5's
    dense output there, the steps it takes unchanged."""
    try:
        from torchdiffeq import odeint
    except ImportError as error:
        raise ImportError("sampler=adaptive needs torchdiffeq: pip install torchdiffeq (or gaga[ode])") from error
    num_graphs, width = int(batch.max()) + 1, pos.shape[1]
    evaluations = 0

    def field(t, state):
        nonlocal evaluations
        evaluations += 1
        pos_t, h_t = project(state[:, :width], state[:, width:])
        v_pos, v_h = velocity(pos_t, h_t, t.expand(num_graphs).to(state), batch)
        return torch.cat([v_pos, v_h], dim=1)

    times = keep_times if keep_frame is not None and keep_times else [t_start, 0.0]
    span = torch.tensor(times, dtype=pos.dtype, device=pos.device)
    states = odeint(field, torch.cat([pos, h], dim=1), span, method="dopri5", rtol=rtol, atol=atol)
    if keep_frame is not None:
        for t, state in zip(times, states, strict=True):
            keep_frame(t, *project(state[:, :width], state[:, width:]))
    pos, h = project(states[-1][:, :width], states[-1][:, width:])
    return pos, h, evaluations


def ode_nll(
    velocity: Denoiser,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    t_end: float,
    prior_variance: tuple[float, float | torch.Tensor],
    zero_mean_features: bool,
    steps: int = 20,
    generator: torch.Generator | None = None,
    prior_feature_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log p(x, h) per molecule [B] by the instantaneous change of variables, in nats.

    Integrates x from 0 to t_end with `steps` Euler steps, accumulating div v by Hutchinson's estimator (one
    Gaussian probe in the zero-mean subspaces, shared by the steps), and scores the end point under the closed-form
    Gaussian N(0, prior_variance) there (GAGA's start at T*, or N(0, I) at t = 1). Densities live on the
    (N-1)*3-dimensional zero-CoM subspace (and (N-1)*F for zero-meaned features). Features that keep their mean
    (`prior_feature_mean` [F]) are scored per column under N(prior_feature_mean, prior_variance[1]).
    """
    probe_pos, probe_h = sample_noise(pos, h, batch, num_graphs, zero_mean_features, generator)
    divergence = torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device)
    dt = t_end / steps
    for k in range(steps):
        with torch.inference_mode(False), torch.enable_grad():  # Lightning validates in inference mode
            time = torch.full((num_graphs,), k * dt, device=pos.device)
            pos_in, h_in = pos.clone().requires_grad_(), h.clone().requires_grad_()
            v_pos, v_h = velocity(pos_in, h_in, time, batch)
            inner = (v_pos * probe_pos.clone()).sum() + (v_h * probe_h.clone()).sum()
            grad_pos, grad_h = torch.autograd.grad(inner, (pos_in, h_in))
        divergence = divergence + dt * (
            per_molecule_sum(grad_pos * probe_pos, batch, num_graphs)
            + per_molecule_sum(grad_h * probe_h, batch, num_graphs)
        )
        pos, h = pos + dt * v_pos.detach(), h + dt * v_h.detach()
        pos = remove_mean(pos, batch, num_graphs)
        if zero_mean_features:
            h = remove_mean(h, batch, num_graphs)
    num_atoms = torch.bincount(batch, minlength=num_graphs)
    log_prior = torch.zeros_like(divergence)
    blocks = [(pos, prior_variance[0], (num_atoms - 1) * pos.shape[1])]
    if prior_feature_mean is None:
        blocks.append((h, prior_variance[1], (num_atoms - int(zero_mean_features)) * h.shape[1]))
    else:
        variance_h = torch.as_tensor(prior_variance[1], dtype=h.dtype, device=h.device).expand(h.shape[1])
        log_density = -0.5 * (h - prior_feature_mean) ** 2 / variance_h - 0.5 * torch.log(2 * math.pi * variance_h)
        log_prior = log_prior + per_molecule_sum(log_density, batch, num_graphs)
    for block, variance, dims in blocks:
        log_prior = log_prior - 0.5 * per_molecule_sum(block**2, batch, num_graphs) / variance
        log_prior = log_prior - 0.5 * dims * math.log(2 * math.pi * variance)
    return -(log_prior + divergence)

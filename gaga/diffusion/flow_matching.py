"""Flow matching (EquiFM, Song et al. 2023) on PyG-style batches, on a `gaga.diffusion.flow_path.FlowPath`.

The velocity regression loss, EquiFM's equivariant optimal-transport coupling of noise to data (all-atom Hungarian
assignment alternated with Kabsch, then one assignment on the rotated noise) and the continuous density by the
instantaneous change of variables (dopri5 through `torchdiffeq`); the ODE samplers (Euler, Heun, dopri5) are in
`gaga.diffusion.samplers`.
A velocity field is called like a denoiser: v(pos_t, h_t, t, batch) -> (v_pos, v_h), t in [0, 1]
(`FlowPath.field(net)` turns a network trained on a path into one).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gaga.diffusion.flow_path import FEATURES, POSITIONS
from gaga.diffusion.forward import StartGaussian, project_state, remove_mean, sample_noise, state_dimensions
from gaga.diffusion.losses import Denoiser, per_molecule_sum

LOSS_NORMALISATIONS = ("padded", "atom_mean")
OT_MAX_ITERATIONS = 50
DEFAULT_TOLERANCE = 1e-4  # EquiFM's dopri5 rtol = atol


def velocity_loss(
    net: Denoiser,
    path,
    pos: torch.Tensor,
    h: torch.Tensor,
    noise: tuple[torch.Tensor, torch.Tensor],
    t: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    normalisation: str = "padded",
) -> torch.Tensor:
    """||net(z_t, t) - target||^2 per molecule [B], z_t and each block's target from `path` (a `FlowPath`).

    The target is the conditional velocity for linear blocks and EquiFM's alpha_t x_0 - alpha_t^2 z_t for the
    hybrid path's features. `t` [B] are times in [0, 1]; `noise` = (eps_pos, eps_h) in the model's zero-mean
    subspaces. normalisation "padded": each molecule's error over (3 + F) N_max, EDM's divisor (the scale of EDM's
    l2 loss); "atom_mean": over (3 + F) N_i, its own atoms (EquiFM's released per-atom mean).
    """
    if normalisation not in LOSS_NORMALISATIONS:
        raise ValueError(f"backbone.loss_normalisation={normalisation!r}: use one of {list(LOSS_NORMALISATIONS)}")
    eps_pos, eps_h = noise
    t_atom = t[batch, None].to(torch.float64)
    outputs, error = {}, 0.0
    z = {POSITIONS: path.noised(pos, eps_pos, t_atom, POSITIONS), FEATURES: path.noised(h, eps_h, t_atom, FEATURES)}
    outputs[POSITIONS], outputs[FEATURES] = net(z[POSITIONS], z[FEATURES], t, batch)
    for block, x0, eps in ((POSITIONS, pos, eps_pos), (FEATURES, h, eps_h)):
        target = path.blocks[block].target(x0.double(), eps.double(), z[block].double(), t_atom).to(x0.dtype)
        error = error + per_molecule_sum((outputs[block] - target) ** 2, batch, num_graphs)
    num_atoms = torch.bincount(batch, minlength=num_graphs)
    atoms = num_atoms if normalisation == "atom_mean" else num_atoms.max()
    return error / ((pos.shape[1] + h.shape[1]) * atoms)


def kabsch_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The proper rotation R minimising ||source @ R.T - target|| for centred [n, 3] point sets."""
    u, _, vt = np.linalg.svd(source.T @ target)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    return (u @ np.diag([1.0, 1.0, sign]) @ vt).T


def equivariant_ot(x: np.ndarray, noise: np.ndarray, max_iterations: int = OT_MAX_ITERATIONS):
    """EquiFM's coupling of one molecule's centred noise [n, 3] to its coordinates x [n, 3]: (order, rotation).

    Iterative closest point: the Hungarian assignment (all atoms, squared distances) of the rotated noise to the
    atoms alternates with the Kabsch rotation of the assigned noise onto the atoms until the assignment repeats
    (at most `max_iterations` times); then one last assignment of the rotated noise. noise[order] @ rotation.T is
    the coupled noise (a local minimum of sum_i ||x_i - R eps_pi(i)||^2 over permutations and rotations).
    """
    from scipy.optimize import linear_sum_assignment

    rotation, order = np.eye(3), None
    for _ in range(max_iterations):
        rotated = noise @ rotation.T
        _, columns = linear_sum_assignment(((x[:, None, :] - rotated[None, :, :]) ** 2).sum(-1))
        if order is not None and np.array_equal(columns, order):
            break
        order = columns
        rotation = kabsch_rotation(noise[order], x)
    rotated = noise @ rotation.T
    _, order = linear_sum_assignment(((x[:, None, :] - rotated[None, :, :]) ** 2).sum(-1))
    return order, rotation


def ot_couple(
    pos: torch.Tensor, eps_pos: torch.Tensor, eps_h: torch.Tensor, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """EquiFM's equivariant OT coupling, per molecule (`equivariant_ot`): noise rows re-assigned to the atoms and
    the noise coordinates rotated; the noise features follow their rows. On the CPU, molecule by molecule."""
    x, noise = pos.detach().cpu().double().numpy(), eps_pos.detach().cpu().double().numpy()
    index = np.arange(len(x))
    coupled = noise.copy()
    bounds = np.concatenate([[0], np.cumsum(torch.bincount(batch).cpu().numpy())])
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if stop - start < 2:
            continue
        order, rotation = equivariant_ot(x[start:stop], noise[start:stop])
        index[start:stop] = start + order
        coupled[start:stop] = noise[start + order] @ rotation.T
    rows = torch.from_numpy(index).to(eps_h.device)
    return torch.from_numpy(coupled).to(eps_pos), eps_h[rows]


def require_odeint(what: str):
    """torchdiffeq's odeint; ImportError naming `what` needs it when torchdiffeq is missing."""
    try:
        from torchdiffeq import odeint
    except ImportError as error:
        raise ImportError(f"{what} needs torchdiffeq (a gaga dependency): pip install torchdiffeq") from error
    return odeint


def _probes(pos, h, batch, num_graphs, zero_mean_features, divergence, generator):
    """Probe pairs (pos, h) whose quadratic forms p^T J p sum to the divergence on the model's subspaces: one
    Gaussian probe (Hutchinson: unbiased), or the projected unit vectors of every entry (exact; N_max (3 + F)
    vector-Jacobian products, molecules in parallel)."""
    if divergence == "hutchinson":
        return [sample_noise(pos, h, batch, num_graphs, zero_mean_features, generator)]
    if divergence != "exact":
        raise ValueError(f"ode_nll: divergence={divergence!r}; use hutchinson or exact")
    counts = torch.bincount(batch, minlength=num_graphs)
    local = torch.arange(len(batch), device=batch.device) - torch.cumsum(counts, 0)[batch] + counts[batch]
    probes = []
    for atom in range(int(counts.max())):
        for block, width in ((0, pos.shape[1]), (1, h.shape[1])):
            for column in range(width):
                unit = [torch.zeros_like(pos), torch.zeros_like(h)]
                unit[block][local == atom, column] = 1.0
                if block == 0 or zero_mean_features:
                    unit[block] = remove_mean(unit[block], batch, num_graphs)
                probes.append(tuple(unit))
    return probes


def ode_nll(
    velocity: Denoiser,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    t_end: float,
    start: StartGaussian,
    zero_mean_features: bool,
    generator: torch.Generator | None = None,
    rtol: float = DEFAULT_TOLERANCE,
    atol: float = DEFAULT_TOLERANCE,
    divergence: str = "hutchinson",
) -> torch.Tensor:
    """-log p(x, h) per molecule [B], in nats: the flow's continuous density (the atom types not dequantised, so
    it falls without bound as the type density sharpens: a density, not a likelihood of molecules).

    By the instantaneous change of variables: x integrated from 0 to t_end by dopri5 (rtol, atol) together with
    the integral of div v (`divergence`: "hutchinson", one Gaussian probe in the zero-mean subspaces shared along
    the path, or "exact"), the end point scored under the closed-form Gaussian `start` there (GAGA's start at T*,
    or the path's end at t = 1). Densities live on the (N-1)*3-dimensional zero-CoM subspace (and (N-1)*F for
    zero-meaned features). Features that keep their mean (`start.mean_h` [F]) are scored per column under
    N(mean_h, variance_h).
    """
    odeint = require_odeint("the ODE likelihood (backbone.ode_likelihood=true)")
    with torch.inference_mode(False):  # Lightning validates in inference mode: probes must be normal tensors
        probes = [
            tuple(p.clone() for p in pair)
            for pair in _probes(pos, h, batch, num_graphs, zero_mean_features, divergence, generator)
        ]
    width = pos.shape[1]

    def project(state):
        return project_state(state[:, :width], state[:, width:], batch, num_graphs, zero_mean_features)

    def field(t, carried):
        state = carried[0]
        with torch.enable_grad():
            pos_in, h_in = (part.detach().requires_grad_() for part in project(state))
            v_pos, v_h = velocity(pos_in, h_in, t.expand(num_graphs).to(state), batch)
            total = torch.zeros(num_graphs, dtype=state.dtype, device=state.device)
            for index, (probe_pos, probe_h) in enumerate(probes):
                inner = (v_pos * probe_pos).sum() + (v_h * probe_h).sum()
                grads = torch.autograd.grad(inner, (pos_in, h_in), retain_graph=index + 1 < len(probes))
                total = total + per_molecule_sum(grads[0] * probe_pos, batch, num_graphs)
                total = total + per_molecule_sum(grads[1] * probe_h, batch, num_graphs)
        return torch.cat([v_pos, v_h], dim=1).detach(), total.detach()

    span = torch.tensor([0.0, t_end], dtype=pos.dtype, device=pos.device)
    initial = (torch.cat([pos, h], dim=1), torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device))
    with torch.inference_mode(False):  # Lightning validates in inference mode
        initial = tuple(part.clone() for part in initial)
        states, divergences = odeint(field, initial, span, method="dopri5", rtol=rtol, atol=atol)
    pos, h = project(states[-1])
    divergence_integral = divergences[-1]
    num_atoms = torch.bincount(batch, minlength=num_graphs)
    log_prior = torch.zeros_like(divergence_integral)
    pos_dims, h_dims = state_dimensions(num_atoms, pos.shape[1], h.shape[1], zero_mean_features)
    blocks = [(pos, start.variance_pos, pos_dims)]
    if start.mean_h is None:
        blocks.append((h, start.variance_h, h_dims))
    else:
        variance_h = torch.as_tensor(start.variance_h, dtype=h.dtype, device=h.device).expand(h.shape[1])
        log_density = -0.5 * (h - start.mean_h.to(h)) ** 2 / variance_h - 0.5 * torch.log(2 * math.pi * variance_h)
        log_prior = log_prior + per_molecule_sum(log_density, batch, num_graphs)
    for block, variance, dims in blocks:
        log_prior = log_prior - 0.5 * per_molecule_sum(block**2, batch, num_graphs) / variance
        log_prior = log_prior - 0.5 * dims * math.log(2 * math.pi * variance)
    return -(log_prior + divergence_integral)

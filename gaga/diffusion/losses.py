"""EDM's objectives on PyG-style batches: the l2 epsilon loss for training and the full NLL estimate.

Both call a denoiser net(pos_t, h_t, t / T, batch) -> (eps_pos, eps_h) and return one value per molecule.
The t = 0 term of the features is the backbone's: `OneHotLikelihood` (EDM's discretised one-hot) or
`GaussianLikelihood` (continuous latents, GeoLDM).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch_geometric.utils import degree, scatter

from gaga.diffusion.forward import Normalizer, StartGaussian, diffuse, remove_mean, state_dimensions
from gaga.diffusion.schedules import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def per_molecule_sum(x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Sum of all entries of each molecule's rows: [N, ...] -> [B]."""
    return scatter(x.reshape(x.shape[0], -1).sum(dim=1), batch, dim=0, dim_size=num_graphs, reduce="sum")


def atoms_per_molecule(batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """The number of atoms of each molecule [B], without a host sync (`bincount` reads the largest index first)."""
    return degree(batch, num_graphs, dtype=torch.long)


def sample_steps(
    num_graphs: int,
    t_min: int,
    start_step: int,
    timesteps: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integer steps drawn uniformly from {t_min, ..., start_step}, one per molecule; needs
    0 <= t_min <= start_step <= T."""
    if not 0 <= t_min <= start_step <= timesteps:
        raise ValueError(f"need 0 <= t_min <= start_step <= T={timesteps}, got t_min={t_min}, start_step={start_step}")
    return torch.randint(t_min, start_step + 1, (num_graphs,), device=device, generator=generator)


def _standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def log_p_h_given_z0(
    h_0: torch.Tensor,
    h: torch.Tensor,
    sigma_0: torch.Tensor,
    normalizer: Normalizer,
    batch: torch.Tensor,
    num_graphs: int,
    epsilon: float = 1e-10,
) -> torch.Tensor:
    """EDM's discretised likelihood log p(h | z_0) of the true atom types (and charges), per molecule.

    Unscaled, each one-hot entry of z_0 gets the Gaussian mass of [0.5, 1.5] around 1 (width
    sigma_0 * onehot_scale), normalised over the types; each charge the mass of its integer's unit bin.
    `sigma_0` is per atom [N, 1].
    """
    onehot, charges = normalizer.split(h)
    z_onehot, z_charges = normalizer.split(h_0)
    sigma_onehot = sigma_0 * normalizer.onehot_scale
    centred = z_onehot - 1.0
    log_mass = torch.log(
        _standard_normal_cdf((centred + 0.5) / sigma_onehot)
        - _standard_normal_cdf((centred - 0.5) / sigma_onehot)
        + epsilon
    )
    log_prob = per_molecule_sum(torch.log_softmax(log_mass, dim=1) * onehot, batch, num_graphs)
    if charges is not None:
        sigma_charge = sigma_0[:, 0] * normalizer.charge_scale
        centred = torch.round(charges) - z_charges
        log_mass = torch.log(
            _standard_normal_cdf((centred + 0.5) / sigma_charge)
            - _standard_normal_cdf((centred - 0.5) / sigma_charge)
            + epsilon
        )
        log_prob = log_prob + scatter(log_mass, batch, dim=0, dim_size=num_graphs, reduce="sum")
    return log_prob


@dataclass
class ZeroStep:
    """What the features' t = 0 term sees: z_0's feature block, the clean features and the eps error there.

    `feature_error` is ||eps_h - eps_hat_h||^2 per molecule, weighted as the objective weights its errors.
    """

    h_0: torch.Tensor
    h: torch.Tensor
    feature_error: torch.Tensor
    sigma_0: torch.Tensor  # [N, 1]
    batch: torch.Tensor
    num_graphs: int


FeatureLikelihood = Callable[[ZeroStep], torch.Tensor]  # -log p(h | z_0) per molecule [B]


@dataclass(frozen=True)
class OneHotLikelihood:
    """EDM's -log p(h | z_0) for one-hot atom types (and charges): `log_p_h_given_z0`, negated.

    Features zero-meaned per molecule (GAGA) are scored as the one-hot they encode: the molecule's mean, which
    z_0 carries as a known shift, is added back to both, so each type's bin is centred on 1 again (zero-meaning
    keeps the argmax). Without zero-meaning the shift is exactly 0 and this is EDM's term.
    """

    normalizer: Normalizer

    def __call__(self, step: ZeroStep) -> torch.Tensor:
        normalizer = self.normalizer
        num_types = step.h.shape[1] - int(normalizer.include_charges)
        onehot = step.h[:, :num_types] * normalizer.onehot_scale + normalizer.onehot_bias
        shift = (F.one_hot(onehot.argmax(dim=1), num_types) - onehot) / normalizer.onehot_scale
        shift = F.pad(shift, (0, step.h.shape[1] - num_types))
        h, h_0 = step.h + shift, step.h_0 + shift
        return -log_p_h_given_z0(h_0, h, step.sigma_0, normalizer, step.batch, step.num_graphs)


@dataclass(frozen=True)
class GaussianLikelihood:
    """-log p(h | z_0) without constants for continuous features (GeoLDM's latents): 0.5 ||eps_h - eps_hat_h||^2."""

    def __call__(self, step: ZeroStep) -> torch.Tensor:
        return 0.5 * step.feature_error


def l2_loss(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    feature_nll: FeatureLikelihood,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    t_min: int = 0,
    start_step: int | None = None,
    zero_mean_features: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM's training loss per molecule [B] and the steps drawn [B]; t ~ U{t_min..start_step} (T by default).

    For t > 0: 0.5 * ||eps - eps_hat||^2 / ((3 + F) * N_max), summed over the molecule, with N_max the largest
    molecule in the batch (EDM pads every molecule to N_max and divides by the padded size; the 0.5 is EDM's
    `loss_t_larger_than_zero = 0.5 * SNR_weight * error` with SNR_weight 1). For t = 0: EDM's reconstruction term
    0.5 * ||eps_x - eps_hat_x||^2 / ((3 + F) * N_max) + `feature_nll` (-log p(h | z_0)).
    GAGA trains with start_step = T*. `pos` and `h` are normalised (Normalizer.encode), `pos` zero-CoM.
    (EDM's logged training loss also adds the parameter-free prior KL and -log p(N); they carry no gradient.)
    """
    start_step = schedule.timesteps if start_step is None else start_step
    t = sample_steps(num_graphs, t_min, start_step, schedule.timesteps, pos.device, generator)
    pos_t, h_t, eps_pos, eps_h = diffuse(pos, h, t, schedule, batch, zero_mean_features, generator)
    pred_pos, pred_h = denoiser(pos_t, h_t, t.float() / schedule.timesteps, batch)
    num_atoms = atoms_per_molecule(batch, num_graphs)
    denominator = (pos.shape[1] + h.shape[1]) * num_atoms.max()
    error_pos = per_molecule_sum((eps_pos - pred_pos) ** 2, batch, num_graphs) / denominator
    error_h = per_molecule_sum((eps_h - pred_h) ** 2, batch, num_graphs) / denominator
    sigma_t = schedule.sigma(t)[batch, None]
    reconstruction = 0.5 * error_pos + feature_nll(ZeroStep(h_t, h, error_h, sigma_t, batch, num_graphs))
    return torch.where(t == 0, reconstruction, 0.5 * (error_pos + error_h)), t


def reconstruction_error(
    pos_rec: torch.Tensor,
    h_rec: torch.Tensor,
    pos: torch.Tensor,
    h: torch.Tensor,
    normalizer: Normalizer,
    batch: torch.Tensor,
    num_graphs: int,
    per_dimension: bool,
) -> torch.Tensor:
    """GeoLDM's autoencoder reconstruction error per molecule [B].

    ||x_rec - x||^2 + cross-entropy of the type logits against the true types (+ squared error of the
    charge column), summed over the molecule, in the units `pos` and `h` are given in (the released GeoLDM: raw,
    charge Z; `normalizer` only says where the charge column is). `per_dimension` divides by (3 + F) * N_max as
    GeoLDM does in training (F = width of h, N_max the largest molecule in the batch); evaluation leaves it out.
    Left out on purpose: the released code's cross-entropy also runs over its padding atoms, adding
    (N_max - N) * log K per molecule, a constant that depends only on how molecules were batched.
    """
    onehot, charges = normalizer.split(h)
    num_types = onehot.shape[1]
    cross_entropy = F.cross_entropy(h_rec[:, :num_types], onehot.argmax(dim=1), reduction="none")
    error = per_molecule_sum((pos_rec - pos) ** 2, batch, num_graphs)
    error = error + scatter(cross_entropy, batch, dim=0, dim_size=num_graphs, reduce="sum")
    if charges is not None:
        error = error + per_molecule_sum((h_rec[:, num_types:] - h[:, num_types:]) ** 2, batch, num_graphs)
    if per_dimension:
        error = error / ((pos.shape[1] + h.shape[1]) * atoms_per_molecule(batch, num_graphs).max())
    return error


def gaussian_kl(mean_sq_norm: torch.Tensor, dims: torch.Tensor, q_sigma: torch.Tensor, p_sigma: float) -> torch.Tensor:
    """KL(N(mu, q_sigma^2 I) || N(0, p_sigma^2 I)) in `dims` dimensions with ||mu||^2 = mean_sq_norm."""
    return dims * torch.log(p_sigma / q_sigma) + 0.5 * (dims * q_sigma**2 + mean_sq_norm) / p_sigma**2 - 0.5 * dims


def gaussian_kl_per_entry(
    mean_q: torch.Tensor, q_sigma: torch.Tensor, mean_p: torch.Tensor, p_variance: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_q, q_sigma^2) || N(mean_p, p_variance)) of each entry: [N, F] for mean_q [N, F], q_sigma [N, 1],
    and a per-column prior mean_p, p_variance [F]."""
    q_variance = q_sigma**2
    return 0.5 * (torch.log(p_variance / q_variance) + (q_variance + (mean_q - mean_p) ** 2) / p_variance - 1.0)


def log_prob_num_atoms(num_atoms_hist: dict[int, int], num_atoms: torch.Tensor) -> torch.Tensor:
    """EDM's log p(N) from the training split's histogram {N: count}; log(1e-30) for unseen sizes."""
    largest = max(max(num_atoms_hist), int(num_atoms.max()))
    counts = torch.zeros(largest + 1, dtype=torch.float64)
    for size, count in num_atoms_hist.items():
        counts[size] = count
    log_p = torch.log(counts / counts.sum() + 1e-30).to(torch.float32)
    return log_p.to(num_atoms.device)[num_atoms]


def nll_estimate(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    normalizer: Normalizer,
    pos: torch.Tensor,
    h: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    log_p_num_atoms: torch.Tensor,
    feature_nll: FeatureLikelihood,
    t: torch.Tensor | None = None,
    start: StartGaussian | None = None,
    zero_mean_features: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """EDM's unbiased estimate of -log p(x, h, N) in nats per molecule (its validation/test NLL); two net calls.

    nll = KL(q(z_T | x, h) || prior) + T * L_t + L_0 + constants - log|det scaling| - log p(N), with
    t ~ U{1..T} (or the given steps `t` [B]), L_t = 0.5 * (SNR(t-1) / SNR(t) - 1) * ||eps - eps_hat||^2,
    L_0 = 0.5 * ||eps_x - eps_hat_x||^2 at t = 0 + `feature_nll` (-log p(h | z_0)),
    constants = -(N-1)*3*log N(0; 0, sigma_0/alpha_0)
    on the (N-1)*3-dimensional zero-CoM subspace. With GAGA's truncation (`start`: the closed-form Gaussian at T*,
    which replaces T and the prior N(0, I)) the same sum is a bound for the truncated model; the default gives
    EDM's. With `zero_mean_features` the feature part of the prior KL lives on the (N-1)*F-dimensional zero-mean
    subspace, like the noise. With a feature mean (`start.mean_h` [F]: features that keep their mean,
    gaga.features=kept) the features' prior is N(mean_h, variance_h) per column, and its KL is summed entry by
    entry.
    Returns every term per molecule [B] under its name, and their sum as "nll".
    """
    start = StartGaussian(schedule.timesteps) if start is None else start
    if t is None:
        t = sample_steps(num_graphs, 1, start.step, schedule.timesteps, pos.device, generator)
    elif t.shape != (num_graphs,) or not bool(((t >= 1) & (t <= start.step)).all()):
        raise ValueError(f"nll_estimate: t must hold one step in 1..{start.step} per molecule ({num_graphs} molecules)")
    num_atoms = atoms_per_molecule(batch, num_graphs)
    pos_dims, h_dims = state_dimensions(num_atoms, pos.shape[1], h.shape[1], zero_mean_features)

    pos_t, h_t, eps_pos, eps_h = diffuse(pos, h, t, schedule, batch, zero_mean_features, generator)
    pred_pos, pred_h = denoiser(pos_t, h_t, t.float() / schedule.timesteps, batch)
    error = per_molecule_sum((eps_pos - pred_pos) ** 2, batch, num_graphs)
    error = error + per_molecule_sum((eps_h - pred_h) ** 2, batch, num_graphs)
    snr_ratio_minus_one = torch.expm1(schedule.gamma(t) - schedule.gamma(t - 1))

    zeros = torch.zeros_like(t)
    pos_0, h_0, eps_pos_0, eps_h_0 = diffuse(pos, h, zeros, schedule, batch, zero_mean_features, generator)
    pred_pos_0, pred_h_0 = denoiser(pos_0, h_0, zeros.float(), batch)
    error_h_0 = per_molecule_sum((eps_h_0 - pred_h_0) ** 2, batch, num_graphs)
    gamma_0 = schedule.gamma(zeros)

    end = torch.full_like(t, start.step)
    alpha2_end, sigma_end = schedule.alpha2(end), schedule.sigma(end)
    variance_pos, variance_h = start.variance_pos, start.variance_h
    h_prior = remove_mean(h, batch, num_graphs) if zero_mean_features else h
    kl_pos = gaussian_kl(
        alpha2_end * per_molecule_sum(pos**2, batch, num_graphs), pos_dims, sigma_end, math.sqrt(variance_pos)
    )
    if start.mean_h is None:
        kl_h = gaussian_kl(
            alpha2_end * per_molecule_sum(h_prior**2, batch, num_graphs), h_dims, sigma_end, math.sqrt(variance_h)
        )
    else:
        variance_h = torch.as_tensor(variance_h, dtype=h.dtype, device=h.device).expand(h.shape[1])
        mean_q = alpha2_end.sqrt()[batch, None] * h_prior
        kl = gaussian_kl_per_entry(mean_q, sigma_end[batch, None], start.mean_h.to(h), variance_h)
        kl_h = per_molecule_sum(kl, batch, num_graphs)
    terms = {
        "kl_prior": kl_pos + kl_h,
        "diffusion": start.step * 0.5 * snr_ratio_minus_one * error,
        "x_given_z0": 0.5 * per_molecule_sum((eps_pos_0 - pred_pos_0) ** 2, batch, num_graphs),
        "h_given_z0": feature_nll(ZeroStep(h_0, h, error_h_0, schedule.sigma(zeros)[batch, None], batch, num_graphs)),
        "constants": pos_dims * (0.5 * gamma_0 + 0.5 * math.log(2 * math.pi)),
        "volume": -normalizer.log_volume_change(num_atoms),
        "num_atoms": -log_p_num_atoms,
    }
    terms["nll"] = sum(terms.values())
    return terms

"""NFE of flow matching's dopri5 sampler (EquiFM's default, rtol = atol = 1e-4) with and without GAGA, on an exact
velocity field (issue 20).

Data: a Gaussian mixture in the shape of QM9 molecules: K training molecules of one size N (zero-CoM coordinates,
one-hot / 4 zero-meaned per molecule, as the backbone under GAGA), each the mean of a component with variance
s^2 per degree of freedom in the zero-mean subspaces. Its velocity field on a `FlowPath` is exact: the posterior
mean of each block's target (linear in x_0 and eps) under the component posterior, turned into a velocity by the
path (`FlowPath.field`, EquiFM's M_t on the hybrid path's features). GAGA's T* is found by the project's
evaluator (`find_t_star`, dataset mode) on draws of the mixture with the path's per-block alpha_bar; sampling with
GAGA starts at T*/T from the closed-form Gaussian (v_hat of the same draws), without GAGA at t = 1 from the
standard normal. NFE counts the field's evaluations (not a timing). A fixed grid's NFE is proportional to the time
span, so its saving is 1 - T*/T; the adaptive solver's saving is smaller because the steps it leaves out (near
noise) are its longest.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/flow_nfe.py [--kind hybrid] [--seeds 5]

Results: experiments/results/flow_nfe_<kind>.csv (and the table printed), described in experiments/results/equifm.md.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import torch

from gaga.config import REPO_ROOT
from gaga.data.elements import QM9_ATOMS
from gaga.data.qm9 import edm_split, load_qm9
from gaga.diffusion.flow_matching import DEFAULT_TOLERANCE
from gaga.diffusion.flow_path import FEATURES, POSITIONS, FlowPath
from gaga.diffusion.forward import remove_mean
from gaga.diffusion.samplers import Adaptive, Chain, run
from gaga.gaussianity import GaussianitySettings, find_t_star, molecule_blocks
from gaga.gaussianity.variance import estimate_variance


class MixtureTargets(torch.nn.Module):
    """The exact regression targets E[target(x_0, eps, z_t, t) | z_t] of a Gaussian mixture on `path`: called like
    the network (pos_t, h_t, t, batch) for molecules of one size."""

    def __init__(self, path: FlowPath, means: dict[str, torch.Tensor], variance: float):
        super().__init__()
        self.path, self.means, self.variance = path, means, variance  # means[block]: [K, N, width]

    def forward(self, pos, h, t, batch):
        num_molecules = int(batch.max()) + 1
        z = {
            POSITIONS: pos.reshape(num_molecules, -1, pos.shape[1]),
            FEATURES: h.reshape(num_molecules, -1, h.shape[1]),
        }
        time = t[:1].double().clamp(0.0, 1.0)  # dopri5 evaluates past t = 0: the field of t = 0 there
        logits, posterior_mean = 0.0, {}
        for block, z_b in z.items():
            a, b = (c.double() for c in self.path.coefficients(block, time))
            variance = a**2 * self.variance + b**2
            mu = self.means[block]  # [K, N, W]
            difference = z_b.double()[:, None] - a * mu[None]  # [B, K, N, W]
            logits = logits - 0.5 * (difference**2).sum((2, 3)) / variance
            posterior_mean[block] = (mu[None], a * self.variance / variance * difference)  # x_hat = mu + gain * diff
        weights = torch.softmax(logits, dim=1)[:, :, None, None]  # [B, K, 1, 1]
        outputs = []
        for block, z_b in z.items():
            a, b = (c.double() for c in self.path.coefficients(block, time))
            mu, shift = posterior_mean[block]
            x_hat = (weights * (mu + shift)).sum(1)
            z_d = z_b.double()
            eps_hat = (z_d - a * x_hat) / b
            target = self.path.blocks[block].target(x_hat, eps_hat, z_d, time)
            outputs.append(target.reshape(-1, z_b.shape[-1]).to(pos.dtype))
        return tuple(outputs)


def mixture_draws(means, variance, count, generator):
    """`count` molecules from the mixture: (blocks as numpy, offsets)."""
    k, n = means[POSITIONS].shape[:2]
    chosen = torch.randint(k, (count,), generator=generator)
    batch = torch.repeat_interleave(torch.arange(count), n)
    blocks = {}
    for block, mu in means.items():
        noise = remove_mean(torch.randn(count * n, mu.shape[2], generator=generator, dtype=torch.float64), batch)
        blocks[block] = (mu[chosen].reshape(-1, mu.shape[2]) + variance**0.5 * noise).numpy()
    return blocks, np.arange(0, count * n + 1, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["hybrid", "linear"], default="hybrid")
    parser.add_argument("--atoms", type=int, default=19, help="molecule size N (QM9's most common: 19)")
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--variance", type=float, default=0.01, help="s^2 of each component per degree of freedom")
    parser.add_argument("--molecules", type=int, default=100, help="molecules per sampling batch")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tolerances", type=float, nargs="+", default=[DEFAULT_TOLERANCE])
    parser.add_argument("--output", help="CSV of every run (default: experiments/results/flow_nfe_<kind>.csv)")
    args = parser.parse_args()

    qm9 = load_qm9(REPO_ROOT / "data")
    train = qm9.subset(edm_split(len(qm9))["train"])
    sizes = np.diff(train.offsets)
    ids = np.random.default_rng(0).choice(np.flatnonzero(sizes == args.atoms), args.components, replace=False)
    blocks, _ = molecule_blocks(train.subset(np.sort(ids)), QM9_ATOMS)
    means = {
        block: torch.from_numpy(values).reshape(args.components, args.atoms, -1) for block, values in blocks.items()
    }
    path = FlowPath(1000, args.kind)
    field = path.field(MixtureTargets(path, means, args.variance))

    draws, offsets = mixture_draws(means, args.variance, 3000, torch.Generator().manual_seed(1))
    zero_com = (POSITIONS, FEATURES)
    settings = GaussianitySettings(zero_com_blocks=zero_com, dataset_molecules=2000, workers=1)
    result = find_t_star(draws, offsets, path.alpha_bar(), settings, progress=False)
    t_star = result.truncation_step(path.timesteps)
    v_hat = estimate_variance(draws, offsets, "unbiased", True, zero_com)
    v_hat = {block: v_hat.start_v_hat(block) for block in zero_com}
    print(f"kind {args.kind}: T* = {t_star} (per block {result.t_star_by_block}), v_hat {v_hat}")

    n, count = args.atoms, args.molecules
    batch = torch.repeat_interleave(torch.arange(count), n)
    project = lambda p, q: (remove_mean(p, batch, count), remove_mean(q, batch, count))  # noqa: E731
    alpha_bar, scale = path.alpha2(torch.tensor(t_star)), path.path_scale(t_star)
    rows = []
    for tolerance in args.tolerances:
        for seed in range(args.seeds):
            generator = torch.Generator().manual_seed(100 + seed)
            noise = [torch.randn(count * n, width, generator=generator, dtype=torch.float64) for width in (3, 5)]
            noise = project(*noise)
            for arm, start_step in (("full", path.timesteps), ("gaga", t_star)):
                start = []
                for block, eps in zip((POSITIONS, FEATURES), noise, strict=True):
                    if arm == "gaga":  # the closed form: s^2 (alpha_bar v_hat + 1 - alpha_bar) per degree of freedom
                        a = float(alpha_bar[block])
                        eps = eps * scale[block] * (a * v_hat[block] + 1 - a) ** 0.5
                    start.append(eps)
                sampler, chain = Adaptive(tolerance, tolerance), Chain(field, path, batch, zero_mean_features=True)
                steps = sampler.steps(start_step, path.timesteps)
                nfe = run(sampler, chain, lambda final: final.num_evaluations, *start, steps)
                rows.append(
                    {
                        "kind": args.kind,
                        "tolerance": tolerance,
                        "seed": seed,
                        "arm": arm,
                        "t_start": start_step / path.timesteps,
                        "nfe": nfe,
                    }
                )
    print("tolerance,arm,t_start,mean_nfe,min_nfe,max_nfe")
    summary = []
    for tolerance in args.tolerances:
        means_by_arm = {}
        for arm in ("full", "gaga"):
            nfe = np.array([r["nfe"] for r in rows if r["tolerance"] == tolerance and r["arm"] == arm])
            t_start = 1.0 if arm == "full" else t_star / path.timesteps
            means_by_arm[arm] = nfe.mean()
            print(f"{tolerance:g},{arm},{t_start:.3f},{nfe.mean():.1f},{nfe.min()},{nfe.max()}")
        saving = 1 - means_by_arm["gaga"] / means_by_arm["full"]
        summary.append(saving)
        print(f"dopri5 at {tolerance:g}: GAGA saves {100 * saving:.1f} % of NFE (adaptive, measured)")
    print(f"a fixed grid: GAGA saves {100 * (1 - t_star / path.timesteps):.1f} % of NFE (1 - T*/T)")
    output = args.output or REPO_ROOT / "experiments" / "results" / f"flow_nfe_{args.kind}.csv"
    with open(output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()

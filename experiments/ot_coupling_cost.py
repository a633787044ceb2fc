"""Transport cost of flow matching's OT coupling on QM9: independent noise against `ot_couple` (issue 20).

Results and the figure of the type-restricted coupling it replaced: experiments/results/equifm.md.

For 500 training molecules (fixed seed), normalised as the backbone normalises them (zero CoM), draws zero-CoM
noise and reports the mean per-molecule squared distance sum_i ||x_i - eps_i||^2 between data and noise, before and
after `gaga.diffusion.flow_matching.ot_couple`, and the coordinates' variance per degree of freedom of z_t on the
path at --t (default 0.474: T*/T of the hybrid path on QM9-shaped data, experiments/flow_nfe.py) against GAGA's
closed form a^2 v_hat + b^2, which assumes noise independent of the data (why GAGA refuses the coupling).

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/ot_coupling_cost.py [--molecules 500] [--seed 0] [--t 0.474]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from gaga.config import REPO_ROOT
from gaga.data.elements import QM9_ATOMS
from gaga.data.qm9 import edm_split, load_qm9
from gaga.diffusion.flow_matching import ot_couple
from gaga.diffusion.flow_path import POSITIONS, FlowPath
from gaga.diffusion.forward import remove_mean
from gaga.gaussianity import molecule_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--t", type=float, default=0.474)
    args = parser.parse_args()
    qm9 = load_qm9(REPO_ROOT / "data")
    train = qm9.subset(edm_split(len(qm9))["train"])
    chosen = train.subset(np.sort(np.random.default_rng(args.seed).choice(len(train), args.molecules, replace=False)))
    blocks, offsets = molecule_blocks(chosen, QM9_ATOMS)
    counts = torch.from_numpy(np.diff(offsets))
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    pos = torch.from_numpy(blocks["positions"])
    generator = torch.Generator().manual_seed(args.seed)
    eps_pos = remove_mean(torch.randn(pos.shape, generator=generator, dtype=torch.float64), batch)
    eps_h = torch.randn(len(pos), 5, generator=generator, dtype=torch.float64)

    def cost(noise: torch.Tensor) -> float:
        per_molecule = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, batch, ((pos - noise) ** 2).sum(1))
        return float(per_molecule.mean())

    def variance(noise: torch.Tensor) -> float:
        """Per degree of freedom of zero-CoM coordinates: sum ||z_t||^2 / (3 sum (N - 1))."""
        a, b = FlowPath().coefficients(POSITIONS, torch.tensor(args.t, dtype=torch.float64))
        return float(((a * pos + b * noise) ** 2).sum() / (3 * (counts - 1).sum()))

    coupled, _ = ot_couple(pos, eps_pos, eps_h, batch)
    print("setting,molecules,mean_cost,variance_per_dof_at_t")
    print(f"independent,{len(counts)},{cost(eps_pos):.4f},{variance(eps_pos):.4f}")
    print(f"ot_couple,{len(counts)},{cost(coupled):.4f},{variance(coupled):.4f}")
    a, b = FlowPath().coefficients(POSITIONS, torch.tensor(args.t, dtype=torch.float64))
    v_hat = float((pos**2).sum() / (3 * (counts - 1).sum()))
    print(f"closed form at t = {args.t}: a^2 v_hat + b^2 = {float(a**2 * v_hat + b**2):.4f} (v_hat {v_hat:.4f})")


if __name__ == "__main__":
    main()

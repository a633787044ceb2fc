"""Transport cost of flow matching's OT coupling on QM9: independent noise against `ot_couple` (issue 20).

Results and the figure of the type-restricted coupling it replaced: experiments/results/equifm.md.

For 500 training molecules (fixed seed), normalised as the backbone normalises them (zero CoM), draws zero-CoM
noise and reports the mean per-molecule squared distance sum_i ||x_i - eps_i||^2 between data and noise, before and
after `gaga.diffusion.flow_matching.ot_couple`. Prints one CSV line per setting.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/ot_coupling_cost.py [--molecules 500] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from gaga.config import REPO_ROOT
from gaga.data.elements import QM9_ATOMS
from gaga.data.qm9 import edm_split, load_qm9
from gaga.diffusion.flow_matching import ot_couple
from gaga.diffusion.forward import remove_mean
from gaga.gaussianity import molecule_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
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

    coupled, _ = ot_couple(pos, eps_pos, eps_h, batch)
    print("setting,molecules,mean_cost")
    print(f"independent,{len(counts)},{cost(eps_pos):.4f}")
    print(f"ot_couple,{len(counts)},{cost(coupled):.4f}")


if __name__ == "__main__":
    main()

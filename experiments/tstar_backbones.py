"""T* of each backbone on QM9's training split, same evaluator settings: EDM (normalised atoms), GeoLDM (its
encoder's latents), flow matching (normalised atoms on the linear path, found through its variance-preserving twin).

    python experiments/tstar_backbones.py [--backbones edm geoldm flow_matching] [--molecules 100000] [--hidden 256]

The arrays come from the backbone interface (`gaussianity_data`), with features zero-meaned per molecule as every
GAGA run has them, and are noised as the model noises them (`zero_mean_blocks`); GeoLDM's encoder is the published
one (1 EGNN block, `--hidden` features, latent_nf 1) at its seeded initial weights, which the released GeoLDM never
trains. Prints T_ID, T_DS, T* per block, v_hat and times.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from bench_setup import backbone_config

from gaga.config import DATA_DIR
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.qm9 import QM9
from gaga.gaussianity import GaussianitySettings, VarianceEstimate, find_t_star
from gaga.models.build import build

PAPER_T_STAR = {"edm": "550", "geoldm": "650", "flow_matching": "not reported"}  # GAGA, ICLR 2026, QM9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["edm", "geoldm", "flow_matching"])
    parser.add_argument("--molecules", type=int, default=100_000, help="training molecules (a seeded subset if fewer)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--mode", default="dataset", choices=["dataset", "per_molecule"])
    parser.add_argument("--seed", type=int, default=42, help="seed of GeoLDM's encoder initialisation")
    args = parser.parse_args()

    subset = {"train": args.molecules} if args.molecules < 100_000 else {}
    datamodule = MoleculeDataModule(QM9(DATA_DIR), eval_batch_size=512, subset=subset)
    dataset = datamodule.model_description()
    settings = GaussianitySettings(mode=args.mode)
    print(
        f"{len(datamodule.splits['train'])} training molecules; evaluator (zero_com_blocks: each model's "
        f"zero_mean_blocks): {settings.to_dict()}"
    )
    rows = []
    for backbone in args.backbones:
        torch.manual_seed(args.seed)
        config = backbone_config(backbone, args.hidden, layers=1)
        model = build(config, dataset=dataset, zero_mean_features=True).eval()
        start = time.perf_counter()
        blocks, offsets = model.gaussianity_data(datamodule.ordered_loader("train"))
        encoded = time.perf_counter() - start
        start = time.perf_counter()
        model_settings = replace(settings, zero_com_blocks=tuple(model.zero_mean_blocks))  # the model's noise
        result = find_t_star(blocks, offsets, model.schedule.alpha_bar(), model_settings, progress=False)
        searched = time.perf_counter() - start
        rows.append((backbone, result, encoded, searched))
    print(f"\n{'backbone':13s} {'block':10s} {'T_ID':>5s} {'T_DS':>5s} {'T*':>5s}  v_hat (data / noise variance)")
    for backbone, result, encoded, searched in rows:
        variance = VarianceEstimate.from_dict(result.variance)
        for block in result.t_star_by_block:
            component = variance.component(block)
            ratio = variance.data[component] / variance.noise[component]
            print(
                f"{backbone:13s} {block:10s} {result.t_id[block]!s:>5s} {result.t_ds[block]!s:>5s} "
                f"{result.t_star_by_block[block]!s:>5s}  {ratio:.3g}"
            )
        print(
            f"{backbone:13s} {'overall':10s} {'':5s} {'':5s} {result.t_star!s:>5s}  (paper's T*: "
            f"{PAPER_T_STAR[backbone]}); arrays {encoded:.1f} s, search {searched:.1f} s"
        )


if __name__ == "__main__":
    main()

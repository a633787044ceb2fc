"""Benchmark: sampling time per molecule of a backbone, full trajectory (T) against GAGA's start at T*.

Timing does not depend on the weights, so an untrained network of the published size is used unless --ckpt is
given. Prints seconds per molecule for each start step:
    python experiments/bench_sample.py [--backbone edm|geoldm] [--ckpt PATH] [--starts 1000 550] [--molecules 200]
"""

from __future__ import annotations

import argparse

import torch
from bench_setup import add_network_options, describe, qm9_datamodule, qm9_model

from gaga.sampling import generate, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--starts", type=int, nargs="+", default=[1000, 550])
    parser.add_argument("--molecules", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--stride", type=int, default=1)
    add_network_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.ckpt:
        model = load_model(args.ckpt, device)
    else:
        model = qm9_model(qm9_datamodule(), args.backbone, args.hidden, args.layers, device)
    model.eval()
    print(f"{describe(model, device)}; batch {args.batch_size}")
    generate(model, args.batch_size, args.batch_size, stride=100, progress=False)  # warm-up
    for start in args.starts:
        run = generate(model, args.molecules, args.batch_size, stride=args.stride, start=start, progress=False)
        print(
            f"start t={start:5d}: {run.num_evaluations} network evaluations, "
            f"{run.seconds_per_molecule:.4f} s/molecule, {1 / run.seconds_per_molecule:.1f} molecules/s"
        )


if __name__ == "__main__":
    main()

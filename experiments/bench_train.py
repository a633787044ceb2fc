"""Benchmark: training throughput of a backbone at the published QM9 size (9 x 256) at batch 64 on real QM9.

Prints steps/s, molecules/s and peak memory on the current device:
    python experiments/bench_train.py [--backbone edm|geoldm] [--steps 20] [--batch-size 64] [--hidden 256 --layers 9]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from bench_setup import add_network_options, describe, qm9_datamodule, qm9_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    add_network_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)

    datamodule = qm9_datamodule(args.batch_size)
    model = qm9_model(datamodule, args.backbone, args.hidden, args.layers, device)
    optimizer = model.configure_optimizers()
    batches = iter(datamodule.train_dataloader())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> int:
        batch = next(batches).to(device)
        loss = model.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.configure_gradient_clipping(optimizer)
        optimizer.step()
        model.on_train_batch_end(loss, batch, 0)
        return batch.num_graphs

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, molecules = time.perf_counter(), 0
    for _ in range(args.steps):
        molecules += step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    print(describe(model, device))
    print(f"network: EGNN {args.layers} x {args.hidden}, batch {args.batch_size}")
    rate = args.steps / elapsed
    print(f"steps/s: {rate:.3f}   s/step: {1 / rate:.3f}   molecules/s: {molecules / elapsed:.1f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    print(f"peak host memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

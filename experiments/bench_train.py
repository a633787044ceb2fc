"""Benchmark: training throughput of the published EDM QM9 network (9 x 256) at batch 64 on real QM9.

Prints steps/s, molecules/s and peak memory on the current device:
    python experiments/bench_train.py [--steps 20] [--batch-size 64] [--hidden 256 --layers 9] [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from edm_setup import add_network_options, qm9_datamodule, qm9_edm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    add_network_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)

    datamodule = qm9_datamodule(args.batch_size)
    model = qm9_edm(datamodule, args.hidden, args.layers, device)
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.net.parameters())
    print(f"device: {name}")
    print(f"network: EGNN {args.layers} x {args.hidden} ({params:,} parameters), batch {args.batch_size}")
    rate = args.steps / elapsed
    print(f"steps/s: {rate:.3f}   s/step: {1 / rate:.3f}   molecules/s: {molecules / elapsed:.1f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    print(f"peak host memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

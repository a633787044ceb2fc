"""Benchmark: sampling throughput per speed switch and against EDM's reference code, from T and from GAGA's T*, with
the ancestral sampler (stride 1) and DDIM (stride 2).

Timing does not depend on the weights, so untrained networks of the published size are used unless --ckpt is given.
Each arm samples the same molecule sizes (drawn from QM9's p(N)), one batch per batch size and chain:
    python experiments/bench_sample.py [--batch-sizes 100 500] [--starts 1000 550] [--transitions 0]
        [--arms edm-ref eager bf16 bf16+compile]
--transitions 0 times whole chains. --transitions K times chains of K and 2K transitions (same sampler, stride and
batch) and projects the whole chain as a + b x transitions (a: the start state and the decoding, b: one transition,
whose work does not depend on t); such rows say `projected`. --whole-arms ARM... times those arms' whole chains at
the first batch size all the same (a check of the projection, and measured T* / T ratios). Arms as in
bench_train.py (bench_speed.py); EDM's code samples ancestrally from T only, so its rows time its own sampler at
the same number of network evaluations as the gaga chain beside them (bench_edm.py). TFLOP/s: the counted forward
FLOPs (bench_speed.py) x network evaluations / time. The first chain of each arm and batch size (compilation
included) is a short untimed warm-up.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import bench_edm
import torch
from bench_setup import add_network_options, qm9_datamodule, qm9_model
from bench_speed import Arm, forward_flops, peak_memory_mib, rate_text, reset_peak_memory, synchronize

import gaga
from gaga.models.checkpoints import load_model

CHAINS = (("ancestral", 1), ("ddim", 2))


def timed(run, device: torch.device) -> float:
    synchronize(device)
    clock = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - clock


def chain_seconds(sample, transitions: int, projection: int, device: torch.device) -> tuple[float, bool]:
    """(seconds, projected) of a chain of `transitions` transitions and the decoding: measured, or projected from
    chains of `projection` and 2 x `projection` transitions when those are shorter. `sample(n)` runs n transitions."""
    if not projection or transitions <= 2 * projection:
        return timed(lambda: sample(transitions), device), False
    short, long = timed(lambda: sample(projection), device), timed(lambda: sample(2 * projection), device)
    return short + (long - short) / projection * (transitions - projection), True


def gaga_chains(model, arm: Arm, device: torch.device, num_atoms: torch.Tensor, sampler: str, stride: int):
    """n -> a chain of n transitions of `sampler` at `stride` (starting at n x stride), under the arm's autocast."""

    def sample(transitions: int) -> None:
        with arm.autocast(device):
            model.sample(num_atoms, sampler, stride, transitions * stride, generator=torch.Generator(device))

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100])
    parser.add_argument("--starts", type=int, nargs="+", default=[1000, 550])
    parser.add_argument("--transitions", type=int, default=0, help="0: whole chains; K: project from K and 2K")
    parser.add_argument(
        "--whole-arms", nargs="*", default=[], help="arms timed on whole chains at the first batch size"
    )
    parser.add_argument("--arms", nargs="+", default=None, help="default: edm-ref eager (+ bf16 bf16+compile on GPU)")
    parser.add_argument("--compile-backend", default="inductor")
    add_network_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    arm_names = args.arms or (["edm-ref", "eager", "bf16", "bf16+compile"] if gpu else ["edm-ref", "eager"])
    arms = {name: None if name == "edm-ref" else Arm.parse(name) for name in arm_names}
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; gaga from {Path(gaga.__file__).parent}")
    print(f"backbone {args.backbone}, EGNN {args.layers} x {args.hidden}")
    if "edm-ref" in arms and (args.ckpt or not bench_edm.available()):
        print("EDM reference: skipped (--ckpt given)" if args.ckpt else bench_edm.skipped_note())
        del arms["edm-ref"]

    datamodule = qm9_datamodule()
    hist = datamodule.statistics.num_atoms_hist
    sizes, weights = torch.tensor(list(hist)), torch.tensor(list(hist.values()), dtype=torch.float)
    generator = torch.Generator().manual_seed(0)
    batches = {n: sizes[torch.multinomial(weights, n, replacement=True, generator=generator)] for n in args.batch_sizes}
    chains = [(start, sampler, stride) for start in args.starts for sampler, stride in CHAINS]
    rows = {}
    for arm_name, arm in arms.items():
        if arm is None:
            reference = bench_edm.EDMReference(hist, device, args.hidden, args.layers)
        else:
            torch.manual_seed(0)
            if args.ckpt:
                model = load_model(args.ckpt, device)
            else:
                model = qm9_model(datamodule, args.backbone, args.hidden, args.layers, device)
            model.eval()
            arm.prepare(model, args.compile_backend)
        for batch_size, num_atoms in batches.items():
            for index, (start, sampler, stride) in enumerate(chains):
                if arm is None:
                    sample = partial(reference.sample, num_atoms)  # EDM: ancestral, at equal network evaluations
                else:
                    sample = gaga_chains(model, arm, device, num_atoms, sampler, stride)
                if index == 0:
                    sample(2)  # warm-up (and compilation)
                reset_peak_memory(device)
                whole = arm_name in args.whole_arms and batch_size == args.batch_sizes[0]
                seconds, projected = chain_seconds(sample, start // stride, 0 if whole else args.transitions, device)
                rows[arm_name, batch_size, start, sampler] = (seconds, projected, peak_memory_mib(device))
                print(
                    f"  measured {arm_name} at batch {batch_size}, {sampler} from {start}: {seconds:.2f} s", flush=True
                )
    report(rows, arms, batches, chains, args, device)


def report(rows: dict, arms: dict, batches: dict, chains: list, args, device: torch.device) -> None:
    """One table per batch size, then each arm's time from the lowest start over the time from the highest."""
    net = {"hidden_nf": args.hidden, "n_layers": args.layers}
    for batch_size, num_atoms in batches.items():
        per_evaluation = forward_flops(net, 5, num_atoms)
        print(
            f"\nbatch {batch_size} ({int(num_atoms.sum())} atoms); counted FLOPs per network evaluation "
            f"{per_evaluation / 1e9:.1f} G"
        )
        print("| arm | start | chain | evaluations | s/batch | molecules/s | s/molecule | speed-up | TFLOP/s | MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for start, sampler, stride in chains:
            evaluations = start // stride + 1
            reference = rows.get(("edm-ref", batch_size, start, sampler))
            for arm_name, arm in arms.items():
                seconds, projected, (memory, kind) = rows[arm_name, batch_size, start, sampler]
                chain = f"{sampler} stride {stride}" if arm is not None else "EDM's ancestral"
                chain += " (projected)" if projected else ""
                speedup = f"{reference[0] / seconds:.2f}x" if reference else "-"
                precision = "fp32" if arm is None else arm.matmul_precision
                rate = rate_text(per_evaluation * evaluations, seconds, device, precision)
                print(
                    f"| {arm_name} | {start} | {chain} | {evaluations} | {seconds:.2f} | {batch_size / seconds:.1f} "
                    f"| {seconds / batch_size:.4f} | {speedup} | {rate} | {memory:,.0f} {kind} |"
                )
    print("speed-up: against EDM's code at the same batch and number of network evaluations")
    low, high = min(args.starts), max(args.starts)
    for arm_name in arms if low < high else ():
        ratios = [
            f"{sampler} at {size}: {rows[arm_name, size, low, sampler][0] / rows[arm_name, size, high, sampler][0]:.3f}"
            for size in batches
            for sampler, _ in CHAINS
        ]
        print(f"{arm_name}: time from {low} / time from {high}: " + ", ".join(ratios))


if __name__ == "__main__":
    main()

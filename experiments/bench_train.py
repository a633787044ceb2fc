"""Benchmark: training throughput at the published QM9 size (9 x 256) on real QM9, per speed switch and against EDM's
reference code, on the same batches in one process.

For each arm and batch size: steps/s, molecules/s, peak memory and the achieved TFLOP/s of the counted FLOPs
(bench_speed.py says how they are counted; one eager step is also measured with torch's FlopCounterMode):
    python experiments/bench_train.py                     # CPU: EDM's code against gaga (eager float32), batch 64
    python experiments/bench_train.py --batch-sizes 64 256 --arms edm-ref eager bf16 bf16+compile --steps 20
Arms: `edm-ref` (EDM's EGNN_dynamics_QM9 + EnVariationalDiffusion with its optimiser, clipping and EMA, when
experiments/edm_reference/ holds its code: bench_edm.py), `eager` or switches joined by `+` (bench_speed.py). A gaga
step is what Lightning runs for training_step: the forward pass and loss (under autocast for bf16), backward, the
non-finite check, EDM's clipping, AdamW and EMA, without Lightning's loop and logging. The first --warmup steps
(compilation included) are not timed; their time is printed as `warm-up s`, and the number of graphs torch.compile
made as `compiled` (dynamic shapes: one per autograd mode, plus the backend's own size guards, e.g. inductor's CPU
code switches at 4,096 edges).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import bench_edm
import torch
from bench_setup import add_network_options, qm9_datamodule, qm9_model
from bench_speed import Arm, forward_flops, numerics, peak_memory_mib, rate_text, reset_peak_memory, synchronize
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode

import gaga


def training_batches(batch_size: int, count: int) -> tuple[list, object]:
    """The first `count` batches of QM9's training split in its stored (randomly permuted) order, the same for every
    arm and every version of gaga, and the datamodule."""
    datamodule = qm9_datamodule(batch_size)
    loader = iter(datamodule.ordered_loader("train"))
    return [next(loader) for _ in range(count)], datamodule


def gaga_step(model, optimizer, arm: Arm, device: torch.device):
    """One training step of a gaga backbone in Lightning's order; returns the number of molecules."""

    def step(batch) -> int:
        batch = model.transfer_batch_to_device(batch, device, 0)
        with arm.autocast(device):
            loss = model.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.on_before_optimizer_step(optimizer)
        model.configure_gradient_clipping(optimizer)
        optimizer.step()
        model.on_train_batch_end(loss, batch, 0)
        return batch.num_graphs

    return step


def run(step, batches: list, warmup: int, device: torch.device) -> dict:
    """Warm-up steps, then the timed ones: seconds, molecules, warm-up seconds and peak memory."""
    clock = time.perf_counter()
    for batch in batches[:warmup]:
        step(batch)
    synchronize(device)
    warm = time.perf_counter() - clock
    reset_peak_memory(device)
    clock, molecules = time.perf_counter(), 0
    for batch in batches[warmup:]:
        molecules += step(batch)
    synchronize(device)
    return {"seconds": time.perf_counter() - clock, "molecules": molecules, "warmup": warm}


def fresh_model(data: dict, args, arm: Arm):
    """The backbone at its initial weights (the same for every arm), prepared for the arm."""
    torch.manual_seed(0)
    model = qm9_model(next(iter(data.values()))[1], args.backbone, args.hidden, args.layers, torch.device(args.device))
    arm.prepare(model, args.compile_backend)
    return model


def profile(step, batches: list, arm_name: str, batch_size: int, device: torch.device) -> None:
    """torch.profiler over `batches` steps: the operators with the most own device (CPU: host) time, and on a GPU
    the kernel launches per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profiler(activities=activities) as trace:
        for batch in batches:
            step(batch)
        synchronize(device)
    events = trace.key_averages()
    print(f"\nprofile of {arm_name} at batch {batch_size}, {len(batches)} steps:")
    print(events.table(sort_by="self_device_time_total" if gpu else "self_cpu_time_total", row_limit=15))
    if gpu:
        launches = sum(event.count for event in events if event.key in ("cudaLaunchKernel", "cuLaunchKernel"))
        print(f"CUDA kernel launches per step: {launches / len(batches):.0f}")


def measured_flops(model, batch, device: torch.device) -> float:
    """FlopCounterMode's count of one eager float32 forward and backward pass."""
    with FlopCounterMode(display=False) as counter:
        model.training_step(batch.to(device), 0).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--arms", nargs="+", default=None, help="default: edm-ref eager (+ bf16 bf16+compile on GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on GPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 on GPU, 1 on CPU)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--profile", nargs="*", default=[], help="arms to profile (3 steps, first batch size)")
    add_network_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    arm_names = args.arms or (["edm-ref", "eager", "bf16", "bf16+compile"] if gpu else ["edm-ref", "eager"])
    steps = args.steps or (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    arms = {name: None if name == "edm-ref" else Arm.parse(name) for name in arm_names}
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; gaga from {Path(gaga.__file__).parent}")
    print(f"backbone {args.backbone}, EGNN {args.layers} x {args.hidden}")
    if "edm-ref" in arms and not bench_edm.available():
        print(bench_edm.skipped_note())
        del arms["edm-ref"]

    data = {size: training_batches(size, warmup + steps) for size in args.batch_sizes}
    results = {}
    for arm_name, arm in arms.items():
        datamodule = data[args.batch_sizes[0]][1]
        if arm is None:
            reference = bench_edm.EDMReference(datamodule.statistics.num_atoms_hist, device, args.hidden, args.layers)
            step = reference.train_step
        else:
            model = fresh_model(data, args, arm)
            step = gaga_step(model, model.configure_optimizers(), arm, device)
        for size, (batches, _) in data.items():
            inputs = [bench_edm.EDMReference.dense(batch) for batch in batches] if arm is None else batches
            graphs = counters["stats"]["unique_graphs"]
            results[arm_name, size] = run(step, inputs, warmup, device)
            results[arm_name, size]["memory"] = peak_memory_mib(device)
            results[arm_name, size]["graphs"] = counters["stats"]["unique_graphs"] - graphs
            if arm is not None:  # the arm's loss and equivariance at the initial weights, against eager float32
                results[arm_name, size]["numerics"] = numerics(fresh_model(data, args, arm), arm, batches[0], device)
                if ("reference", size) not in results:
                    reference = numerics(fresh_model(data, args, Arm("eager")), Arm("eager"), batches[0], device)
                    results["reference", size] = reference
            seconds = results[arm_name, size]["seconds"] / steps
            print(f"  measured {arm_name} at batch {size}: {seconds:.4f} s/step", flush=True)
        if arm_name in args.profile:
            profile(step, data[args.batch_sizes[0]][0][:3], arm_name, args.batch_sizes[0], device)

    torch.set_float32_matmul_precision("highest")
    model = qm9_model(data[args.batch_sizes[0]][1], args.backbone, args.hidden, args.layers, device)
    net, features = model.hparams.net, model.net.num_features
    for size, (batches, _) in data.items():
        sizes = [torch.bincount(batch.batch) for batch in batches]
        step_flops = 3 * sum(forward_flops(net, features, n) for n in sizes[warmup:]) / steps
        first = 3 * forward_flops(net, features, sizes[0])
        counted = measured_flops(model, batches[0], device)
        print(
            f"\nbatch {size}: {steps} timed steps after {warmup} warm-up steps; counted FLOPs per step "
            f"{step_flops / 1e9:.1f} G (first batch: counted {first / 1e9:.2f} G, FlopCounterMode "
            f"{counted / 1e9:.2f} G, ratio {counted / first:.3f})"
        )
        print(
            "| arm | steps/s | s/step | molecules/s | speed-up | peak memory MiB | TFLOP/s | warm-up s | compiled "
            "| loss vs fp32 | E(3) error |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        base = results.get(("edm-ref", size)) or results.get((next(iter(arms)), size))
        for arm_name, arm in arms.items():
            result = results[arm_name, size]
            seconds = result["seconds"]
            precision = "fp32" if arm is None else arm.matmul_precision
            memory, kind = result["memory"]
            print(
                f"| {arm_name} | {steps / seconds:.3f} | {seconds / steps:.4f} | {result['molecules'] / seconds:.1f} "
                f"| {base['seconds'] / seconds:.2f}x | {memory:,.0f} {kind} "
                f"| {rate_text(step_flops * steps, seconds, device, precision)} | {result['warmup']:.1f} "
                f"| {result['graphs']} | {numerics_text(result.get('numerics'), results['reference', size])} |"
            )
    print(
        "speed-up: against edm-ref when measured, else the first arm; compiled: graphs torch.compile made for it; "
        "loss vs fp32: largest relative difference of a molecule's loss from eager float32's (same weights and "
        "noise); E(3) error: the denoiser's, over its largest output"
    )


def numerics_text(arm: tuple | None, reference: tuple) -> str:
    if arm is None:
        return "- | -"
    loss, equivariance = arm
    difference = float(((loss - reference[0]).abs() / reference[0].abs()).max())
    return f"{difference:.1e} | {equivariance:.1e}"


if __name__ == "__main__":
    main()

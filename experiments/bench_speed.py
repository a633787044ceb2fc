"""Shared by bench_train.py and bench_sample.py: the speed switches as benchmark arms, the counted FLOPs of the EGNN,
peak memory and the GPUs' dense peak rates.

An arm is `eager` (float32, as gaga trains on a CPU) or switches joined by `+`: `bf16` (autocast, as
trainer.precision=bf16-mixed), `tf32` (float32 matmuls on TF32 tensor cores) and `compile` (backbone.compile: the
denoiser and its EMA copy through torch.compile with dynamic shapes). Example: `bf16+compile`.

Counted FLOPs (matmuls only, 2 per multiply-add; activations, scatters, the optimiser and the edge list are left
out), for hidden width H, edge-feature width A (2: the squared distances at the block's and the network's input;
24 with the sinusoidal embedding), S invariant sublayers per block, L blocks and F atom features:
    per edge and block:  S x (edge MLP 2(2H+A)H + 2H^2, attention 2H) + coordinate MLP 2(2H+A)H + 2H^2 + 2H
    per atom and block:  S x node MLP (2(2H)H + 2H^2)
    per atom, once:      input and output embeddings 2(F+1)H each
    forward = L x (E x per-edge + N x per-atom) + N x embeddings, with E = sum n(n-1) the batch's real edges;
    a training step = 3 x forward (the backward pass multiplies by the weights and by the inputs).
At 9 x 256 that is 0.79 MFLOP per edge and block and, for QM9's mean molecule (18 atoms, 340 edges), 2.5 GFLOP per
forward pass.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass
from pathlib import Path

import torch

SWITCHES = ("bf16", "tf32", "compile")

# Dense (no sparsity) peak rates in TFLOP/s from the vendors' data sheets: (FP32 without tensor cores, TF32, BF16).
DENSE_PEAKS = {
    "H100 80GB HBM3": (67.0, 494.7, 989.4),  # H100 SXM5
    "H100 PCIe": (51.2, 378.0, 756.0),
    "H200": (67.0, 494.7, 989.4),
    "A100": (19.5, 156.0, 312.0),
}


@dataclass(frozen=True)
class Arm:
    """A combination of the speed switches."""

    name: str
    bf16: bool = False
    tf32: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, name: str) -> Arm:
        switches = [] if name == "eager" else name.split("+")
        unknown = sorted(set(switches) - set(SWITCHES))
        if unknown or not switches and name != "eager":
            raise ValueError(f"unknown arm {name!r}: use eager or switches joined by + from {list(SWITCHES)}")
        return cls(name, **{switch: True for switch in switches})

    @property
    def matmul_precision(self) -> str:
        """The precision the network's matmuls run at: bf16, tf32 or fp32."""
        return "bf16" if self.bf16 else "tf32" if self.tf32 else "fp32"

    def prepare(self, model, compile_backend: str = "inductor") -> None:
        """Set the process's matmul precision for this arm and compile the model's denoiser when asked."""
        torch.set_float32_matmul_precision("high" if self.tf32 else "highest")
        if self.compile:
            model.compile_denoiser(backend=compile_backend)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The forward pass's context: bf16 autocast, as Lightning's bf16-mixed wraps training_step."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)


def forward_flops(net: dict, num_features: int, num_atoms: torch.Tensor) -> float:
    """Counted matmul FLOPs of one forward pass of EGNNDynamics(`net` settings) on molecules of `num_atoms` atoms."""
    hidden, layers, sublayers = net.get("hidden_nf", 256), net.get("n_layers", 9), net.get("inv_sublayers", 1)
    edge_attr = 2 * (12 if net.get("sin_embedding", False) else 1)
    mlp_in = 2 * (2 * hidden + edge_attr) * hidden + 2 * hidden**2
    per_edge = sublayers * (mlp_in + 2 * hidden) + mlp_in + 2 * hidden
    per_atom = sublayers * (2 * 2 * hidden * hidden + 2 * hidden**2)
    embeddings = 2 * 2 * (num_features + 1) * hidden
    atoms = float(num_atoms.sum())
    edges = float((num_atoms * (num_atoms - 1)).sum())
    return layers * (edges * per_edge + atoms * per_atom) + atoms * embeddings


def dense_peak(device: torch.device, precision: str) -> float | None:
    """The GPU's dense peak TFLOP/s at `precision` (fp32, tf32, bf16), None when the card is not in the table."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in DENSE_PEAKS.items():
        if key in name:
            return peaks[("fp32", "tf32", "bf16").index(precision)]
    return None


def rate_text(flops: float, seconds: float, device: torch.device, precision: str) -> str:
    """Achieved TFLOP/s, and its fraction of the GPU's dense peak at that precision when known."""
    achieved = flops / seconds / 1e12
    peak = dense_peak(device, precision)
    return f"{achieved:.3f}" + (f" ({100 * achieved / peak:.1f} % of {peak:g})" if peak else "")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: the GPU's allocator statistics, or on Linux the process's resident high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(MiB, what it is): peak GPU memory allocated, or the peak resident set size of the process on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "GPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "RSS"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "RSS (process)"


def numerics(model, arm: Arm, batch, device: torch.device) -> tuple[torch.Tensor, float]:
    """Under the arm (its autocast; compiled when the model was): the per-molecule training loss on `batch` with fixed
    noise, and the denoiser's E(3) error: |net(Q x + b) - Q net(x)| over its largest output (features likewise)."""
    batch = batch.to(device)
    generator = torch.Generator(device).manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    rotation, shift = rotation.float().to(device), torch.tensor([1.5, -2.0, 0.7], device=device)
    with arm.autocast(device):
        loss = model.training_terms(batch, generator)["loss"].detach()
        pos, h = model.diffusion_state(batch)
        t = torch.rand(batch.num_graphs, device=device, generator=generator)
        eps_pos, eps_h = (x.detach() for x in model.net(pos, h, t, batch.batch))
        moved_pos, moved_h = (x.detach() for x in model.net(pos @ rotation.T + shift, h, t, batch.batch))
    error_pos = (moved_pos - eps_pos @ rotation.T).abs().max() / eps_pos.abs().max()
    return loss, max(float(error_pos), float((moved_h - eps_h).abs().max() / eps_h.abs().max()))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

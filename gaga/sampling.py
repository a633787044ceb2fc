"""Generate molecules from a trained model, timing the sampling loop alone, and keep denoising chains.

Used by sample.py and by the sample-quality callback; plain torch (no Hydra), so it runs on the GPU machine. Models
are loaded by gaga.models.checkpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from gaga.data.elements import AtomEncoder
from gaga.data.molecules import MoleculeSet
from gaga.models.checkpoints import CheckpointError
from gaga.nn.dynamics import NonFiniteOutputError

log = logging.getLogger(__name__)


@dataclass
class ChainFrame:
    """One kept state of a denoising chain, read as molecules (the chain's first molecules, in Angstrom)."""

    step: int
    label: str  # what the frame is: "t=250", "start: ...", "t=0: final"
    molecules: MoleculeSet


@dataclass
class Generated:
    molecules: MoleculeSet
    seconds: float  # the sampling loop alone (network and sampler), synchronised on GPU
    num_evaluations: int  # network evaluations per batch
    start: int
    sampler: str  # the sampler that ran (`auto` resolved to the backbone's default)
    chain: list[ChainFrame] | None = None  # the first molecules' denoising chain (generate's `chain`), start first

    @property
    def seconds_per_molecule(self) -> float:
        return self.seconds / max(len(self.molecules), 1)


def resolve_start(model, start: str | int) -> int:
    """`auto` -> the model's T* (T without GAGA); `T` -> the schedule's T; an int -> itself."""
    truncation = model.truncation
    if start == "auto":
        return truncation.start_step
    value = model.schedule.timesteps if start == "T" else int(start)
    if value != truncation.start_step and truncation.gaga:
        trained = truncation.start_step
        log.warning("sampling a GAGA model (T*=%d) from t=%d: an ablation, not the trained setting", trained, value)
    return value


def frame_steps(start: int, stride: int, count: int) -> list[int]:
    """About `count` steps of the strided grid from `start` down to 0, evenly spread, both ends included."""
    grid = np.arange(start, -1, -stride)
    picks = np.linspace(0, len(grid) - 1, min(count, len(grid))).round().astype(int)
    return sorted({int(step) for step in grid[picks]}, reverse=True)


class ChainRecorder:
    """A `keep_frame` callback: copies the states (pos, h) of the first `num_atoms` atoms at `steps`."""

    def __init__(self, num_atoms: int, steps: list[int]):
        self.num_atoms, self.steps = num_atoms, set(steps)
        self.states: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, step: int, pos: torch.Tensor, h: torch.Tensor) -> None:
        if step in self.steps:
            self.states[step] = (pos[: self.num_atoms].clone(), h[: self.num_atoms].clone())


@torch.no_grad()
def decode_frame(model, pos: torch.Tensor, h: torch.Tensor, batch: torch.Tensor, use_ema: bool = True, context=None):
    """A chain state read as molecules by the backbone's own `decode`, noise-free: z itself taken as the data
    (alpha_0 = 1, sigma_0 = 0), as EDM's and GeoLDM's chain pictures do (GeoLDM: its decoder on the latents, reading
    the molecules' `context` when conditional)."""
    from gaga.diffusion.decoding import FinalState

    return model.decode(FinalState.noise_free(pos, h, batch, 0), use_ema, context)


def decode_chain(
    model,
    recorder: ChainRecorder,
    final,
    num_atoms: torch.Tensor,
    encoder: AtomEncoder,
    start: int,
    context: torch.Tensor | None = None,
):
    """The recorded states as molecules, start first; the last frame is the sampler's own output `final` (its
    first `len(num_atoms)` molecules, whose `context` a conditional model reads). The start frame is labelled as
    GAGA's start Gaussian at T* (or the standard normal at T of a model without GAGA)."""
    batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=model.device), num_atoms.to(model.device))
    offsets = np.concatenate([[0], np.cumsum(num_atoms.tolist())])
    count = recorder.num_atoms

    def frame(step: int, label: str, pos: torch.Tensor, types: torch.Tensor) -> ChainFrame:
        numbers = encoder.decode(types.cpu().numpy())
        return ChainFrame(step, label, MoleculeSet(pos.cpu().numpy(), numbers, offsets))

    frames = []
    for step in sorted(recorder.states, reverse=True):
        if step == 0:
            continue  # z_0: the final frame is what the sampler decoded from it
        output = decode_frame(model, *recorder.states[step], batch, context=context)
        frames.append(frame(step, _frame_label(model, step, start), output.pos, output.atom_types))
    frames.append(frame(0, "t=0: final", final.pos[:count], final.atom_types[:count]))
    return frames


def _frame_label(model, step: int, start: int) -> str:
    if step != start:
        return f"t={step}"
    if model.truncation.gaga and start == model.truncation.start_step:
        return f"t=T*={start}: GAGA's start Gaussian"
    if start == model.schedule.timesteps:
        return f"t=T={start}: standard normal"
    return f"t={start}: start Gaussian"


def check_chain(chain: int, frames: int, batch_size: int, num_molecules: int) -> None:
    """ValueError with the fix when `chain` molecules cannot be recorded from the first batch."""
    if chain < 0:
        raise ValueError(f"chain={chain}: the number of denoising chains must be >= 0 (0: none)")
    if chain > min(batch_size, num_molecules):
        raise ValueError(
            f"chain={chain} is larger than the first batch ({min(batch_size, num_molecules)} molecules); "
            f"set chain<={min(batch_size, num_molecules)} or a larger batch_size / n_samples"
        )
    if chain and frames < 2:
        raise ValueError(f"chain_frames={frames}: a chain needs at least 2 frames (start and final)")


def requested_properties(model, condition: dict[str, float | None] | None) -> dict[str, float]:
    """The fixed property values asked of a model (`condition`: name -> value, None entries meaning "draw it");
    ValueError naming the fix for a property the model is not conditioned on, or for a partial request."""
    fixed = {name: float(value) for name, value in (condition or {}).items() if value is not None}
    names = list(model.property_norms.names) if model.property_norms else []
    if not names and fixed:
        raise ValueError(f"condition {fixed}: this model is unconditional (trained without data.conditioning)")
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise ValueError(f"condition.{unknown[0]}: the model is conditioned on {names}, not on {unknown[0]}")
    if fixed and set(fixed) != set(names):
        missing = sorted(set(names) - set(fixed))
        raise ValueError(f"condition: give every property the model is conditioned on ({names}); missing {missing}")
    return fixed


def draw_properties(model, num_atoms: torch.Tensor, fixed: dict[str, float], generator) -> torch.Tensor | None:
    """Property values [B, k] for molecules of sizes `num_atoms`: the `fixed` ones, else drawn from the training
    molecules' p(property | N) (EDM's DistributionProperty); None for an unconditional model."""
    if model.property_norms is None:
        return None
    if fixed:
        return torch.tensor([[fixed[name] for name in model.property_norms.names]]).expand(len(num_atoms), -1)
    return model.property_given_size.sample(num_atoms, generator)


def generate(
    model,
    num_molecules: int,
    batch_size: int = 100,
    sampler: str = "auto",
    stride: int = 1,
    start: str | int = "auto",
    eta: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    chain: int = 0,
    chain_frames: int = 10,
    condition: dict[str, float | None] | None = None,
) -> Generated:
    """`num_molecules` molecules with sizes from the model's p(N), in batches, with a progress bar.

    `chain` > 0 keeps the denoising chain of the first `chain` molecules (of the first batch) at about
    `chain_frames` steps from the start to 0, decoded after the timed loop (`Generated.chain`). A conditional model
    generates molecules with the property values in `condition` (name -> value), or, where it gives none, values
    drawn per molecule from p(property | N); the molecules' `properties` record what each was asked for.
    """
    from tqdm.auto import tqdm

    if num_molecules < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {num_molecules} and {batch_size}")
    check_chain(chain, chain_frames, batch_size, num_molecules)
    fixed = requested_properties(model, condition)
    start_step = resolve_start(model, start)
    sampler = model.samplers[0].name if sampler == "auto" else sampler
    encoder = AtomEncoder(model.hparams.dataset["name"], tuple(model.hparams.dataset["atom_symbols"]))
    generator = torch.Generator(model.device).manual_seed(seed)
    size_generator = torch.Generator().manual_seed(seed)
    positions, numbers, sizes, asked = [], [], [], []
    elapsed, evaluations = 0.0, 0
    steps = start_step // stride
    num_batches = -(-num_molecules // batch_size)
    description = f"sampling ({sampler}, {steps} steps)"
    recorder, frames = None, None
    with tqdm(total=num_batches * steps, unit="step", desc=description, disable=not progress) as bar:
        while len(sizes) < num_molecules:
            num_atoms = model.sample_num_atoms(min(batch_size, num_molecules - len(sizes)), size_generator)
            properties = draw_properties(model, num_atoms, fixed, size_generator)
            context = model.context(properties)
            if chain and not sizes:
                recorder = ChainRecorder(int(num_atoms[:chain].sum()), frame_steps(start_step, stride, chain_frames))
            _synchronize(model.device)
            clock = time.perf_counter()
            try:
                output, _ = model.sample(
                    num_atoms,
                    sampler,
                    stride,
                    start_step,
                    eta,
                    generator=generator,
                    on_step=bar.update,
                    keep_frame=recorder if not sizes else None,
                    context=context,
                )
            except NonFiniteOutputError as error:
                source = getattr(model, "source", f"the model in training (step {model.global_step})")
                raise CheckpointError(
                    f"{source}: {error} while sampling from step {start_step}; its weights are broken (train again or "
                    "take an earlier checkpoint)"
                ) from None
            _synchronize(model.device)
            elapsed += time.perf_counter() - clock
            if recorder is not None and not sizes:
                first = None if context is None else context[:chain]
                frames = decode_chain(model, recorder, output, num_atoms[:chain], encoder, start_step, first)
            evaluations = output.num_evaluations
            positions.append(output.pos.cpu().numpy())
            numbers.append(encoder.decode(output.atom_types.cpu().numpy()))
            sizes.extend(num_atoms.tolist())
            if properties is not None:
                asked.append(properties.cpu().numpy())
            bar.set_postfix(molecules=len(sizes))
    molecules = MoleculeSet(
        positions=np.concatenate(positions),
        atomic_numbers=np.concatenate(numbers),
        offsets=np.concatenate([[0], np.cumsum(sizes)]),
        properties=dict(zip(model.property_norms.names, np.concatenate(asked).T, strict=True)) if asked else {},
    )
    return Generated(molecules, elapsed, evaluations, start_step, sampler, frames)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

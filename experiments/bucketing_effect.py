"""Experiment: what size-bucketed batches (data.bucketing) change in EDM's training objective on real QM9.

EDM's l2 loss divides each molecule's squared error by (3 + F) * N_max, N_max the largest molecule of its batch, so a
molecule's weight in the gradient depends on the company it is batched with. This script prints, for the batches
training uses (MoleculeDataModule's EpochBatchSampler, shuffled vs bucketed, on EDM's 100,000 training molecules):

1. each molecule's weight 1 / N_max: its mean, and its mean per molecule-size band relative to shuffled batches;
2. the mean training loss of one fixed model under both batch plans. The loss decomposes per molecule (graphs are
   disjoint; N_max is the only batch-level quantity), so each molecule's error is computed once, with fixed t ~ U{1..T}
   and noise, and divided by the N_max of its batch under each plan: the two figures differ by the weights alone;
3. the validation NLL of that model with validation batches cut both ways, each molecule at the same t in both (the
   NLL has no batch-level term: the difference is the noise draws' Monte Carlo error, shown with its standard error).

    python experiments/bucketing_effect.py [--batch-size 64] [--loss-molecules 2048] [--nll-molecules 512]
        [--ckpt PATH (a trained gaga checkpoint; default: an untrained 64 x 3 EDM, seed 0)]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_setup import qm9_datamodule, qm9_model
from torch_geometric.loader import DataLoader

from gaga.data.datamodule import EpochBatchSampler, EpochShuffleSampler
from gaga.diffusion.losses import l2_loss, nll_estimate
from gaga.models.checkpoints import load_model

PLANS = {"shuffled": False, "bucketed": True}


def batch_plan(sizes: np.ndarray, batch_size: int, bucketing: bool, epoch: int, seed: int) -> list[list[int]]:
    """The batches of `epoch`, cut as MoleculeDataModule.train_dataloader cuts them (its sampler, data.seed = seed)."""
    sampler = EpochBatchSampler(
        EpochShuffleSampler(len(sizes), seed), batch_size, sizes=sizes, bucketing=bucketing, seed=seed
    )
    sampler.sampler.set_epoch(epoch)
    return sampler.epoch_batches()


def largest_in_batch(sizes: np.ndarray, batches: list[list[int]]) -> np.ndarray:
    """N_max of each molecule's batch."""
    n_max = np.empty(len(sizes), dtype=np.int64)
    for batch in batches:
        n_max[batch] = sizes[batch].max()
    return n_max


@torch.no_grad()
def squared_errors(model, dataset, indices: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Each molecule's summed squared noise-prediction error with t >= 1, and 3 + F: l2_loss's loss is the error
    divided by (3 + F) * N_max."""
    errors = []
    generator = torch.Generator().manual_seed(seed)
    for batch in DataLoader(torch.utils.data.Subset(dataset, indices.tolist()), batch_size=64):
        pos, h = model.diffusion_state(batch)
        loss, _ = l2_loss(
            model.averaged("net"),
            model.schedule,
            model.feature_nll,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            t_min=1,
            start_step=model.truncation.start_step,
            zero_mean_features=model.hparams.zero_mean_features,
            generator=generator,
        )
        width = pos.shape[1] + h.shape[1]
        errors.append((loss * width * torch.bincount(batch.batch).max()).double().numpy())
    return np.concatenate(errors), width


@torch.no_grad()
def validation_nll(model, dataset, batches: list[list[int]], steps: torch.Tensor, seed: int) -> np.ndarray:
    """Per-molecule NLL estimates (nats) of the molecules `dataset[i]`, i in 0..len(steps) - 1, batched as `batches`,
    molecule i at step `steps[i]` whatever its batch (its noise is drawn with its batch)."""
    nll = np.empty(len(steps))
    for index, members in enumerate(batches):
        batch = next(iter(DataLoader(torch.utils.data.Subset(dataset, members), batch_size=len(members))))
        pos, h = model.diffusion_state(batch)
        terms = nll_estimate(
            model.averaged("net"),
            model.schedule,
            model.normalizer,
            pos,
            h,
            batch.batch,
            batch.num_graphs,
            model.log_prob_num_atoms(batch),
            model.feature_nll,
            t=steps[members],
            start=model.truncation.start_gaussian(),
            zero_mean_features=model.hparams.zero_mean_features,
            generator=torch.Generator().manual_seed(seed * 100_003 + index),
        )
        nll[members] = terms["nll"].double().numpy()
    return nll


def report_weights(train_sizes: np.ndarray, batch_size: int, epochs: int, seed: int) -> dict[str, np.ndarray]:
    """Part 1; returns N_max of each training molecule's batch [epoch, molecule] under each plan."""
    n_max = {
        plan: np.stack(
            [
                largest_in_batch(train_sizes, batch_plan(train_sizes, batch_size, bucketing, epoch, seed))
                for epoch in range(epochs)
            ]
        )
        for plan, bucketing in PLANS.items()
    }
    weights = {plan: (1.0 / values).mean(axis=0) for plan, values in n_max.items()}  # per molecule, over epochs
    print("\n1. per-molecule weight 1 / N_max (l2_loss divides by (3 + F) * N_max)")
    for plan in PLANS:
        print(
            f"   {plan:9s} mean N_max {n_max[plan].mean():6.2f}   mean 1/N_max {weights[plan].mean():.5f}"
            f"   mean N/N_max {(train_sizes * weights[plan]).mean():.3f}"
        )
    print("   weight bucketed / shuffled by molecule size (atoms):")
    edges = [0, 13, 17, 19, 21, 30]
    for low, high in zip(edges, edges[1:], strict=False):
        band = (train_sizes >= low) & (train_sizes < high)
        ratio = weights["bucketed"][band].mean() / weights["shuffled"][band].mean()
        print(f"     N in [{low:2d}, {high - 1:2d}]: {band.sum():6,} molecules, weight ratio {ratio:.3f}")
    return n_max


def report_loss(model, datamodule, n_max: dict[str, np.ndarray], molecules: int, seed: int) -> None:
    """Part 2: the fixed model's mean loss on `molecules` training molecules under epoch 0's batches of each plan."""
    picked = np.sort(np.random.default_rng(seed).choice(n_max["shuffled"].shape[1], molecules, replace=False))
    errors, width = squared_errors(model, datamodule.dataset("train"), picked, seed)
    print(f"\n2. mean training loss of the fixed model on {molecules:,} training molecules (same t, noise)")
    losses = {plan: (errors / (width * n_max[plan][0, picked])).mean() for plan in PLANS}
    for plan, loss in losses.items():
        print(f"   {plan:9s} {loss:.5f}  (per molecule, epoch 0's batches)")
    print(f"   ratio bucketed / shuffled {losses['bucketed'] / losses['shuffled']:.3f}")


def report_nll(model, datamodule, batch_size: int, molecules: int, seed: int) -> None:
    """Part 3: the fixed model's NLL on `molecules` validation molecules, batched both ways, paired by t."""
    sizes = np.diff(datamodule.splits["valid"].offsets)
    chosen = np.sort(np.random.default_rng(seed + 1).choice(len(sizes), molecules, replace=False))
    valid = torch.utils.data.Subset(datamodule.dataset("valid"), chosen.tolist())
    last = model.truncation.start_step
    steps = torch.randint(1, last + 1, (molecules,), generator=torch.Generator().manual_seed(seed))
    print(f"\n3. validation NLL (nats per molecule) of the fixed model on {molecules:,} validation molecules")
    nll = {
        plan: validation_nll(model, valid, batch_plan(sizes[chosen], batch_size, bucketing, 0, seed), steps, seed)
        for plan, bucketing in PLANS.items()
    }
    for plan, values in nll.items():
        print(f"   {plan:9s} {values.mean():9.2f} +- {values.std(ddof=1) / np.sqrt(molecules):.2f} (s.e.)")
    difference = nll["bucketed"] - nll["shuffled"]
    print(
        f"   bucketed - shuffled, per molecule at the same t: {difference.mean():.2f} "
        f"+- {difference.std(ddof=1) / np.sqrt(molecules):.2f} (s.e.; only the noise draws differ)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of batch plans averaged for the weights")
    parser.add_argument("--loss-molecules", type=int, default=2048)
    parser.add_argument("--nll-molecules", type=int, default=512)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    datamodule = qm9_datamodule(args.batch_size)
    datamodule.setup()
    train_sizes = np.diff(datamodule.splits["train"].offsets)
    print(f"QM9 training split: {len(train_sizes):,} molecules, batch {args.batch_size}, epochs 0..{args.epochs - 1}")
    n_max = report_weights(train_sizes, args.batch_size, args.epochs, args.seed)

    model = load_model(args.ckpt) if args.ckpt else qm9_model(datamodule, "edm", 64, 3, "cpu")
    model.eval()
    name = args.ckpt or f"untrained 64 x 3 EDM (seed {args.seed})"
    print(f"\nfixed model: {name}, start step {model.truncation.start_step}")
    report_loss(model, datamodule, n_max, args.loss_molecules, args.seed)
    report_nll(model, datamodule, args.batch_size, args.nll_molecules, args.seed)


if __name__ == "__main__":
    main()

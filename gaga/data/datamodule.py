"""The LightningDataModule: a molecule source -> cached MoleculeSet -> splits -> PyG `Batch`es.

Batches carry `pos` (Angstrom), one-hot `x`, `charges` (atomic numbers, [N, 1]), `batch` and
`ptr`, and with `conditioning` the molecules' `properties` ([B, k], the properties' units); no padding. Zero-meaning
and normalisation (of properties too) belong to the model, not the data. Training batches are a
function of (seed, epoch) (EpochBatchSampler, optionally size-bucketed), served by a loader whose position in the
epoch Lightning saves in checkpoints (ResumableLoader): a run resumed mid-epoch goes on with that epoch's next batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from gaga.data.molecules import MoleculeSet
from gaga.data.properties import PropertyGivenSize, PropertyNorms, check_conditioning, edm_halves
from gaga.data.statistics import DatasetStatistics

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
HALVES = ("first", "second")


class MoleculeDataset(torch.utils.data.Dataset):
    """Index -> PyG `Data` for one split, reading straight from the flat arrays; with `conditioning`, each molecule's
    values of those properties as `properties` [1, k]."""

    def __init__(
        self, molecules: MoleculeSet, type_index: np.ndarray, num_types: int, conditioning: tuple[str, ...] = ()
    ):
        self.molecules, self.num_types = molecules, num_types
        self.positions = torch.from_numpy(molecules.positions)
        self.types = torch.from_numpy(type_index)
        self.charges = torch.from_numpy(molecules.atomic_numbers.astype(np.float32)).unsqueeze(1)
        columns = [molecules.properties[name] for name in conditioning]
        self.properties = torch.from_numpy(np.stack(columns, axis=1).astype(np.float32)) if columns else None

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, i: int) -> Data:
        lo, hi = int(self.molecules.offsets[i]), int(self.molecules.offsets[i + 1])
        x = torch.nn.functional.one_hot(self.types[lo:hi], self.num_types).float()
        data = Data(pos=self.positions[lo:hi], x=x, charges=self.charges[lo:hi], num_nodes=hi - lo)
        if self.properties is not None:
            data.properties = self.properties[i : i + 1]
        return data


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch). Lightning calls `set_epoch` at the start of every epoch."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class EpochBatchSampler(torch.utils.data.BatchSampler):
    """An epoch's training batches, a function of (seed, epoch) only, that can start at any batch of an epoch.

    `sampler` gives the epoch's molecule order and holds the epoch (EpochShuffleSampler; under DDP Lightning swaps
    in its DistributedSampler, also a function of (seed, epoch), one shard per rank, and calls `set_epoch` on it as
    on any `batch_sampler.sampler`). Batches are consecutive runs of that order. With `bucketing`, the order is
    first sorted by atom count (`sizes`; a stable sort, so molecules of one size stay in random order), cut into
    batches, and the batches are shuffled by (seed, epoch): molecules of similar size share a batch, and every epoch
    still holds every molecule exactly once (only the last batch cut may be smaller).

    `resume_at(epoch, k)` makes the next pass over that epoch skip its first k batches.
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool = False, sizes=None, bucketing: bool = False, seed=0):
        if drop_last:
            raise ValueError("EpochBatchSampler serves every molecule every epoch; drop_last must be False")
        if bucketing and sizes is None:
            raise ValueError("bucketing needs the atom count of every molecule (sizes)")
        super().__init__(sampler, batch_size, drop_last=False)
        self.sizes = None if sizes is None else np.asarray(sizes)
        self.bucketing, self.seed = bool(bucketing), int(seed)
        self._resume: dict[int, int] = {}

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, in training order."""
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        if self.bucketing:
            order = order[np.argsort(self.sizes[order], kind="stable")]
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.bucketing:
            batches = [batches[i] for i in np.random.default_rng((self.seed, self.epoch)).permutation(len(batches))]
        return batches

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = {epoch: batches_done}

    def __iter__(self):
        resume, self._resume = self._resume, {}
        return iter(self.epoch_batches()[resume.get(self.epoch, 0) :])

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


class ResumableLoader(DataLoader):
    """The training loader: an EpochBatchSampler's batches, and its position in the epoch saved in checkpoints.

    Lightning's supported mechanism for a mid-epoch resume: its fit loop stores `state_dict()` of every training
    loader that has one in the checkpoint (`loops.fit_loop.state_dict.combined_loader`) and, resuming an unfinished
    epoch, hands it back to `load_state_dict` before it iterates the loader. The position is `batches_done()`, the
    fit loop's own count of this epoch's processed batches (`batch_progress.current.processed`), from which Lightning
    continues the epoch's batch index: loader and loop agree whether the checkpoint came from a batch end, SIGTERM
    or Ctrl+C. Iteration is lazy: the epoch's order is read at the first batch, not when the iterator is made (a run
    resumed at an epoch's start makes it before Lightning's `set_epoch`, and workers would prefetch a stale order).
    """

    def __init__(self, dataset, batches_done: Callable[[], int], **kwargs):
        # the batch sampler comes in kwargs, where Lightning's DDP sampler injection (a re-instantiation) expects it
        super().__init__(dataset, **kwargs)
        self.batches_done = batches_done

    def __iter__(self):
        yield from super().__iter__()

    def state_dict(self) -> dict:
        batches = self.batch_sampler
        return {
            "epoch": batches.epoch,
            "batches_done": int(self.batches_done()),
            "num_batches": len(batches),
            "bucketing": batches.bucketing,
        }

    def load_state_dict(self, state: dict) -> None:
        batches = self.batch_sampler
        plan = {"num_batches": len(batches), "bucketing": batches.bucketing}
        saved = {key: state[key] for key in plan}
        if saved != plan:
            log.warning(
                "the checkpoint was written in epoch %d after %d batches of another batch plan (%s, now %s: "
                "data.batch_size, data.subset or data.bucketing changed); the rest of that epoch takes batches "
                "from the start of its new order",
                state["epoch"],
                state["batches_done"],
                saved,
                plan,
            )
            return
        batches.resume_at(state["epoch"], state["batches_done"])


class MoleculeDataModule(pl.LightningDataModule):
    """Serves a source's splits (optionally subsets) as PyG batches and exposes training statistics.

    Args:
        source: an object with `name`, `encoder`, `load() -> MoleculeSet`, `split(ms) -> dict` and `cache_key()`
            (`gaga.data.qm9.QM9`, `gaga.data.drugs.GeomDrugs`).
        remove_h: drop hydrogens (and the H column of the one-hot).
        subset: optional cap per split, e.g. {train: 1000, valid: 200}; molecules drawn with `seed`.
        seed: seed of subset draws and of the training batches (a function of seed and epoch, see EpochBatchSampler).
        bucketing: training batches of molecules with similar atom counts (EpochBatchSampler); this changes EDM's
            loss weights (each molecule's error is divided by its batch's largest molecule), see conf/data/qm9.yaml.
        conditioning: properties the batches carry (names of `source.properties`, e.g. [alpha]) for conditional
            generation and property prediction.
        half: train on EDM's first or second half of the training split (gaga.data.properties.edm_halves): the
            property predictor's and the conditional generator's data; None = the whole split.
    """

    def __init__(
        self,
        source,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        remove_h: bool = False,
        subset: dict[str, int] | None = None,
        seed: int = 0,
        stats_dir: str | Path | None = None,
        bucketing: bool = False,
        conditioning: list[str] | tuple[str, ...] = (),
        half: str | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not isinstance(bucketing, bool):
            raise ValueError(f"data.bucketing must be true or false, got {bucketing!r}")
        self.bucketing = bucketing
        if half not in (None, *HALVES):
            raise ValueError(f"data.half={half!r}: use first, second or null (the whole training split)")
        self.half = half
        self.conditioning = check_conditioning(conditioning or (), source.properties, source.name)
        self.source, self.remove_h, self.seed = source, bool(remove_h), int(seed)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.subset = {k: int(v) for k, v in (subset or {}).items() if v is not None}
        unknown = set(self.subset) - set(SPLITS)
        if unknown:
            raise ValueError(f"data.subset has unknown split(s) {sorted(unknown)}; use {list(SPLITS)}")
        self.encoder = source.encoder.without_hydrogen() if self.remove_h else source.encoder
        self.stats_dir = Path(stats_dir) if stats_dir is not None else Path(getattr(source, "data_dir", "data"))
        self.splits: dict[str, MoleculeSet] = {}
        self.timings: dict[str, float] = {}
        self._statistics: DatasetStatistics | None = None

    @property
    def dataset_name(self) -> str:
        return self.source.name + ("_noH" if self.remove_h else "")

    @property
    def split_key(self) -> str:
        """The source's cache key and what this module takes of it (a half, no hydrogens): names caches of the
        training split's statistics."""
        return self.source.cache_key() + (f"_{self.half}-half" if self.half else "") + ("_noH" if self.remove_h else "")

    def prepare_data(self) -> None:
        self.source.load()  # builds the cache once (rank 0 in DDP)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        start = time.perf_counter()
        molecules = self.source.load()
        self.timings["load"] = time.perf_counter() - start
        start = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        self._molecules = molecules
        for name, indices in self.source.split(molecules).items():
            if name == "train" and self.half is not None:
                indices = indices[edm_halves(len(indices))[self.half]]
            indices_before_subset = indices
            if name in self.subset and self.subset[name] > len(indices):
                raise ValueError(
                    f"data.subset.{name}={self.subset[name]} is larger than the {name} split of "
                    f"{self.source.name} ({len(indices)} molecules); set data.subset.{name}<={len(indices)} "
                    "or null (the whole split)"
                )
            if name in self.subset and self.subset[name] < len(indices):
                indices = np.sort(rng.choice(indices, self.subset[name], replace=False))
            if name == "train":  # statistics (p(N) for sampling, type frequencies) describe the full split
                self._full_train_indices = indices_before_subset
            split = molecules.subset(indices)
            if self.remove_h:
                split = split.without_hydrogen()
            if len(split) == 0:
                raise ValueError(
                    f"split {name!r} of {self.source.name} is empty; check data.subset.{name} (must be >= 1)"
                )
            self.splits[name] = split
        self.timings["split"] = time.perf_counter() - start

    @property
    def statistics(self) -> DatasetStatistics:
        """Statistics of the full training split, also when `data.subset.train` trains on part of it (so a model
        samples molecule sizes from the dataset's p(N), not the subset's), cached as JSON in `stats_dir`."""
        if self._statistics is None:
            self.setup()
            path = self.stats_dir / f"stats_{self.split_key}.json"
            stats = DatasetStatistics.load(path)
            if stats is None:
                start = time.perf_counter()
                full_train = self._molecules.subset(self._full_train_indices)
                if self.remove_h:
                    full_train = full_train.without_hydrogen()
                stats = DatasetStatistics.compute(self.dataset_name, full_train, self.encoder)
                self.timings["statistics"] = time.perf_counter() - start
                stats.save(path)
            self._statistics = stats
        return self._statistics

    @property
    def train_smiles(self) -> list[str]:
        self.setup()
        return self.splits["train"].smiles

    def dataset(self, split: str) -> MoleculeDataset:
        self.setup()
        molecules = self.splits[split]
        types = self.encoder.encode(molecules.atomic_numbers)
        return MoleculeDataset(molecules, types, self.encoder.num_types, self.conditioning)

    def property_values(self, split: str) -> np.ndarray:
        """The conditioning properties of a split's molecules [M, k], in their units."""
        self.setup()
        return np.stack([self.splits[split].properties[name] for name in self.conditioning], axis=1)

    def model_description(self) -> dict:
        """What a model is told about its data (its `dataset` argument, stored in checkpoints): the training split's
        name, atom symbols and p(N) (DatasetStatistics.model_description) and, when the batches carry properties,
        their `conditioning_description` under "conditioning"."""
        description = self.statistics.model_description()
        if self.conditioning:
            description["conditioning"] = self.conditioning_description()
        return description

    def conditioning_description(self) -> dict | None:
        """What a conditional model is told about its properties (stored in its checkpoint), None without
        conditioning: names and units; EDM's normalisation, the mean and MAD of the validation split when training
        on a half (EDM's `compute_mean_mad` for qm9_second_half), else of the training split; and p(property | N) of
        the training molecules (EDM's DistributionProperty) for sampling."""
        if not self.conditioning:
            return None
        self.setup()
        norms = PropertyNorms.fit(self.conditioning, self.property_values("valid" if self.half else "train"))
        sizes = self.splits["train"].num_atoms
        given_size = PropertyGivenSize.fit(self.conditioning, sizes, self.property_values("train"))
        return {
            "units": [self.source.properties[name].unit for name in self.conditioning],
            "norms": norms.record(),
            "given_size": given_size.record(),
        }

    def identity(self) -> dict:
        """What identifies the served training molecules, for caches keyed by them (such as T*)."""
        self.setup()
        return {
            "data": self.source.cache_key(),
            "remove_h": self.remove_h,
            "train_molecules": len(self.splits["train"]),
            **({"half": self.half} if self.half else {}),
            "subset_seed": self.seed if "train" in self.subset else None,
        }

    def ordered_loader(self, split: str) -> DataLoader:
        """The split's molecules in their stored order, in evaluation-sized batches (no shuffling)."""
        dataset = self.dataset(split)
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> ResumableLoader:
        dataset = self.dataset("train")
        batches = EpochBatchSampler(
            EpochShuffleSampler(len(dataset), self.seed),
            self.batch_size,
            sizes=np.diff(dataset.molecules.offsets),
            bucketing=self.bucketing,
            seed=self.seed,
        )
        return ResumableLoader(
            dataset,
            self._batches_done,
            batch_sampler=batches,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _batches_done(self) -> int:
        """Training batches processed so far in this epoch, as the fit loop of the trainer counts them."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _evaluation_loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")

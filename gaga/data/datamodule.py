"""The LightningDataModule: a molecule source -> cached MoleculeSet -> splits -> PyG `Batch`es.

Batches carry `pos` (Angstrom), one-hot `x`, `charges` (atomic numbers, [N, 1]), `batch` and
`ptr`; no padding. Zero-meaning and normalisation belong to the model, not the data.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from gaga.data.molecules import MoleculeSet
from gaga.data.statistics import DatasetStatistics

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


class MoleculeDataset(torch.utils.data.Dataset):
    """Index -> PyG `Data` for one split, reading straight from the flat arrays."""

    def __init__(self, molecules: MoleculeSet, type_index: np.ndarray, num_types: int):
        self.molecules, self.num_types = molecules, num_types
        self.positions = torch.from_numpy(molecules.positions)
        self.types = torch.from_numpy(type_index)
        self.charges = torch.from_numpy(molecules.atomic_numbers.astype(np.float32)).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, i: int) -> Data:
        lo, hi = int(self.molecules.offsets[i]), int(self.molecules.offsets[i + 1])
        x = torch.nn.functional.one_hot(self.types[lo:hi], self.num_types).float()
        return Data(pos=self.positions[lo:hi], x=x, charges=self.charges[lo:hi], num_nodes=hi - lo)


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch), so a resumed run sees the same batches.

    Lightning calls `set_epoch` at the start of every epoch.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class MoleculeDataModule(pl.LightningDataModule):
    """Serves a source's splits (optionally subsets) as PyG batches and exposes training statistics.

    Args:
        source: an object with `name`, `encoder`, `load() -> MoleculeSet`, `split(ms) -> dict` and `cache_key()`
            (`gaga.data.qm9.QM9`, `gaga.data.drugs.GeomDrugs`).
        remove_h: drop hydrogens (and the H column of the one-hot).
        subset: optional cap per split, e.g. {train: 1000, valid: 200}; molecules drawn with `seed`.
        seed: seed of subset draws and of the training shuffle.
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
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
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
        for name, indices in self.source.split(molecules).items():
            if name in self.subset and self.subset[name] > len(indices):
                raise ValueError(
                    f"data.subset.{name}={self.subset[name]} is larger than the {name} split of "
                    f"{self.source.name} ({len(indices)} molecules); set data.subset.{name}<={len(indices)} "
                    "or null (the whole split)"
                )
            if name in self.subset and self.subset[name] < len(indices):
                indices = np.sort(rng.choice(indices, self.subset[name], replace=False))
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
        """Statistics of the full training split (not the subset), cached as JSON in `stats_dir`."""
        if self._statistics is None:
            self.setup()
            full = self.subset.get("train") is None
            path = self.stats_dir / f"stats_{self.source.cache_key()}{'_noH' if self.remove_h else ''}.json"
            stats = DatasetStatistics.load(path) if full else None
            if stats is None:
                start = time.perf_counter()
                stats = DatasetStatistics.compute(self.dataset_name, self.splits["train"], self.encoder)
                self.timings["statistics"] = time.perf_counter() - start
                if full:
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
        return MoleculeDataset(molecules, self.encoder.encode(molecules.atomic_numbers), self.encoder.num_types)

    def identity(self) -> dict:
        """What identifies the served training molecules, for caches keyed by them (such as T*)."""
        self.setup()
        return {
            "data": self.source.cache_key(),
            "remove_h": self.remove_h,
            "train_molecules": len(self.splits["train"]),
            "subset_seed": self.seed if "train" in self.subset else None,
        }

    def ordered_loader(self, split: str) -> DataLoader:
        """The split's molecules in their stored order, in evaluation-sized batches (no shuffling)."""
        dataset = self.dataset(split)
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

"""The training batches (EpochBatchSampler, ResumableLoader): each epoch's batches partition its molecules and depend
only on (seed, epoch); a pass resumed at batch k serves exactly batches k.. of the uninterrupted epoch; bucketing
groups similar atom counts; the loader's saved position round-trips. Oracles: set algebra on molecule indices and the
uninterrupted epoch's own batches."""

import logging

import numpy as np
import pytest

from gaga.data.datamodule import EpochBatchSampler, EpochShuffleSampler, MoleculeDataModule
from gaga.data.qm9 import QM9
from tests.conftest import DATA_DIR

SIZES = np.random.default_rng(7).integers(3, 30, size=203)  # atom counts of 203 molecules (QM9's range)


def batch_sampler(seed: int = 0, bucketing: bool = False, epoch: int = 0) -> EpochBatchSampler:
    sampler = EpochBatchSampler(EpochShuffleSampler(len(SIZES), seed), 16, sizes=SIZES, bucketing=bucketing, seed=seed)
    sampler.sampler.set_epoch(epoch)
    return sampler


@pytest.mark.parametrize("bucketing", [False, True])
def test_each_epoch_partitions_the_molecules_and_depends_only_on_seed_and_epoch(bucketing):
    epochs = [batch_sampler(bucketing=bucketing, epoch=epoch).epoch_batches() for epoch in (0, 1)]
    for batches in epochs:
        assert len(batches) == len(batch_sampler()) == 13  # ceil(203 / 16)
        assert sorted(i for batch in batches for i in batch) == list(range(len(SIZES)))  # each molecule exactly once
        assert sorted(len(batch) for batch in batches) == [11] + [16] * 12
    assert epochs[0] == batch_sampler(bucketing=bucketing, epoch=0).epoch_batches()  # a fresh sampler: the same
    assert epochs[0] != epochs[1] and epochs[0] != batch_sampler(seed=1, bucketing=bucketing).epoch_batches()
    if not bucketing:  # consecutive runs of the epoch's permutation, as a DataLoader over EpochShuffleSampler cuts it
        order = list(EpochShuffleSampler(len(SIZES), 0))
        assert epochs[0] == [order[i : i + 16] for i in range(0, len(order), 16)]


def test_bucketing_groups_similar_sizes_in_a_random_batch_order():
    epochs = [batch_sampler(bucketing=True, epoch=epoch).epoch_batches() for epoch in (0, 1)]
    for batches in epochs:
        ranges = sorted((SIZES[batch].min(), SIZES[batch].max()) for batch in batches)
        assert all(high <= low for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False))  # no size overlaps
        smallest = [SIZES[batch].min() for batch in batches]
        assert smallest != sorted(smallest)  # the batch order is shuffled, not small to large
    assert [sorted(b) for b in epochs[0]] != [sorted(b) for b in epochs[1]]  # members change with the epoch too
    shuffled = batch_sampler().epoch_batches()
    assert np.mean([np.ptp(SIZES[b]) for b in epochs[0]]) < np.mean([np.ptp(SIZES[b]) for b in shuffled]) / 4


@pytest.mark.parametrize("bucketing", [False, True])
@pytest.mark.parametrize("done", [0, 5, 12, 13])
def test_a_pass_resumed_at_batch_k_serves_the_rest_of_that_epoch_once(bucketing, done):
    whole = batch_sampler(bucketing=bucketing, epoch=3).epoch_batches()
    resumed = batch_sampler(bucketing=bucketing, epoch=3)
    resumed.resume_at(3, done)
    assert list(resumed) == whole[done:]
    assert list(resumed) == whole  # only the resumed pass skips
    other_epoch = batch_sampler(bucketing=bucketing, epoch=4)
    other_epoch.resume_at(3, done)
    assert list(other_epoch) == batch_sampler(bucketing=bucketing, epoch=4).epoch_batches()


def molecule_keys(loader) -> list[list[float]]:
    """Each batch as the sorted first coordinates of its molecules (molecules identified by content)."""
    return [sorted(batch.pos[batch.ptr[:-1], 0].tolist()) for batch in loader]


def test_the_loaders_saved_position_restores_the_rest_of_the_epoch(caplog):
    datamodule = MoleculeDataModule(QM9(DATA_DIR), batch_size=8, subset={"train": 40}, bucketing=True)

    def loader(batch_size: int = 8):
        datamodule.batch_size = batch_size
        train = datamodule.train_dataloader()
        train.batch_sampler.sampler.set_epoch(2)  # what Lightning does at the start of epoch 2
        return train

    running = loader()
    running.batches_done = lambda: 3  # the fit loop's count of processed batches
    state = running.state_dict()
    assert state == {"epoch": 2, "batches_done": 3, "num_batches": 5, "bucketing": True}
    resumed = loader()
    resumed.load_state_dict(state)
    assert molecule_keys(resumed) == molecule_keys(loader())[3:]

    caplog.set_level(logging.WARNING)
    changed = loader(batch_size=10)
    changed.load_state_dict(state)
    assert "another batch plan" in caplog.text and "data.batch_size, data.subset or data.bucketing" in caplog.text
    assert len(list(changed)) == 4  # no skip: that epoch's new order from its start


def test_the_loader_reads_the_epoch_at_its_first_batch_not_when_iterated():
    """A resumed run's fit loop makes the loader's iterator before it sets the epoch (Lightning's order)."""
    datamodule = MoleculeDataModule(QM9(DATA_DIR), batch_size=8, subset={"train": 40})
    loader = datamodule.train_dataloader()
    batches = iter(loader)
    loader.batch_sampler.sampler.set_epoch(5)
    first = molecule_keys([next(batches)])
    assert first == molecule_keys([next(iter(loader))])  # epoch 5's first batch
    assert first != molecule_keys([next(iter(datamodule.train_dataloader()))])  # not epoch 0's


def test_bucketing_must_be_a_bool():
    with pytest.raises(ValueError, match="data.bucketing must be true or false, got 'yes'"):
        MoleculeDataModule(QM9(DATA_DIR), bucketing="yes")


def test_lightnings_ddp_sampler_injection_keeps_the_batch_plan():
    """Under DDP Lightning re-creates the loader with its DistributedSampler inside the batch sampler (as it does in
    fit): each rank buckets its own shard, every rank gets as many batches, and together they cover the epoch."""
    from lightning_fabric.utilities.data import _replace_dunder_methods
    from pytorch_lightning.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    datamodule = MoleculeDataModule(QM9(DATA_DIR), batch_size=8, subset={"train": 40}, bucketing=True)
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = datamodule.train_dataloader()  # as Lightning requests it: its arguments recorded
    shards = []
    for rank in (0, 1):
        ranked = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank, seed=0))
        assert isinstance(ranked.batch_sampler, EpochBatchSampler) and ranked.batch_sampler.bucketing
        assert ranked.batches_done == datamodule._batches_done
        shards.append(ranked.batch_sampler.epoch_batches())
    assert len(shards[0]) == len(shards[1]) == 3
    assert sorted(i for shard in shards for batch in shard for i in batch) == list(range(40))

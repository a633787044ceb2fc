"""QM9 data: cache build/load and its failure modes, EDM's split, statistics against docs/references.md, batches."""

import numpy as np
import pytest

from gaga.data.datamodule import MoleculeDataModule
from gaga.data.elements import QM9_ATOMS
from gaga.data.molecules import CacheError, MoleculeSet
from gaga.data.qm9 import QM9, QM9_PARTS, build_qm9_cache, edm_split, load_qm9, qm9pack_data_dir
from gaga.data.statistics import DatasetStatistics, per_molecule_moments
from tests.conftest import DATA_DIR


@pytest.fixture
def small_source(tmp_path):
    """A qm9pack-shaped folder holding the first 30 molecules of each real CSV part."""
    folder = tmp_path / "qm9pack"
    folder.mkdir()
    for name in QM9_PARTS:
        with open(qm9pack_data_dir() / name) as src:
            head = [next(src) for _ in range(31)]
        (folder / name).write_text("".join(head))
    return folder


def test_all_molecules_and_edm_split(qm9):
    assert len(qm9) == 130_831
    split = edm_split(len(qm9), seed=0)
    assert {k: len(v) for k, v in split.items()} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    assert len(np.unique(np.concatenate(list(split.values())))) == len(qm9)
    assert not np.array_equal(edm_split(len(qm9), seed=1)["train"], split["train"])
    z, pos = qm9.molecule(0)  # QM9 index 1 is methane
    assert z.tolist() == [6, 1, 1, 1, 1] and qm9.smiles[0] == "C"
    assert np.linalg.norm(pos[1:] - pos[0], axis=1) == pytest.approx([1.09] * 4, abs=0.01)


def test_statistics_reproduce_anchors(qm9_train):
    """10,000 random training molecules: the standard error of each mean is below 0.003."""
    sample = qm9_train.subset(np.random.default_rng(1).choice(len(qm9_train), 10_000, replace=False))
    moments = per_molecule_moments(sample, QM9_ATOMS)
    assert moments["rms_coords"] == pytest.approx(1.380, abs=0.005)
    assert moments["rms_types"] == pytest.approx(0.086, abs=0.005)
    assert moments["rms_all"] == pytest.approx(0.848, abs=0.005)
    assert moments["var_coords"] == pytest.approx(1.963, rel=0.02)
    assert moments["var_types"] == pytest.approx(0.0075, rel=0.03)


def test_statistics_histogram_and_json_round_trip(qm9_sample, tmp_path):
    stats = DatasetStatistics.compute("qm9", qm9_sample, QM9_ATOMS)
    assert sum(stats.num_atoms_hist.values()) == len(qm9_sample)
    assert stats.max_num_atoms == int(qm9_sample.num_atoms.max()) <= 29
    assert stats.atom_type_frequencies["H"] == pytest.approx(0.512, abs=0.01)
    stats.save(tmp_path / "s.json")
    assert DatasetStatistics.load(tmp_path / "s.json") == stats


def test_cache_builds_loads_and_rebuilds_when_corrupt(small_source, tmp_path, caplog):
    data_dir = tmp_path / "data"
    molecules = load_qm9(data_dir, source_dir=small_source)
    assert len(molecules) == 90 and molecules.smiles[0] == "C"
    (data_dir / "qm9.npz").write_bytes(b"not a zip file")
    assert len(load_qm9(data_dir, source_dir=small_source)) == 90
    assert "corrupt" in caplog.text


def test_damaged_csv_names_file_and_line_and_keeps_old_cache(small_source, tmp_path):
    data_dir = tmp_path / "data"
    build_qm9_cache(data_dir, small_source)
    before = (data_dir / "qm9.npz").read_bytes()
    part = small_source / QM9_PARTS[1]
    lines = part.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace('"[[', '"[', 1)  # drop one coordinate triple's bracket: count mismatch
    part.write_text("".join(lines))
    with pytest.raises(ValueError, match=rf"{QM9_PARTS[1]}, line 6 .*reinstall qm9pack"):
        build_qm9_cache(data_dir, small_source)
    assert (data_dir / "qm9.npz").read_bytes() == before


def test_truncated_csv_is_an_error(small_source, tmp_path):
    part = small_source / QM9_PARTS[0]
    part.write_text(part.read_text()[:-400])
    with pytest.raises(ValueError, match=QM9_PARTS[0]):
        build_qm9_cache(tmp_path / "data", small_source)


def test_stale_cache_version_message(tmp_path):
    ms = MoleculeSet(np.zeros((2, 3)), np.array([6, 1]), np.array([0, 2]), ["C"])
    ms.save(tmp_path / "x.npz")
    import gaga.data.molecules as molecules_module

    original = molecules_module.CACHE_VERSION
    molecules_module.CACHE_VERSION = original + 1
    try:
        with pytest.raises(CacheError, match="version .* run: fix"):
            MoleculeSet.load(tmp_path / "x.npz", rebuild_hint="run: fix")
    finally:
        molecules_module.CACHE_VERSION = original


def test_nan_coordinates_and_unknown_element_are_named():
    bad = MoleculeSet(np.array([[0, 0, 0], [np.nan, 0, 0]]), np.array([6, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="molecule 1 has NaN"):
        bad.validate("file.npz")
    with pytest.raises(ValueError, match=r"element Cl \(Z=17\) is not in the qm9"):
        QM9_ATOMS.encode(np.array([6, 17]))


def test_datamodule_batches():
    dm = MoleculeDataModule(QM9(DATA_DIR), batch_size=16, subset={"train": 64, "valid": 32, "test": 8})
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 16 and batch.x.shape == (batch.num_nodes, 5)
    assert batch.x.sum(1).eq(1).all() and batch.pos.shape == (batch.num_nodes, 3)
    assert batch.ptr[-1] == batch.num_nodes and batch.charges.shape == (batch.num_nodes, 1)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 64, "valid": 32, "test": 8}
    types = QM9_ATOMS.decode(batch.x.argmax(1).numpy())
    assert np.array_equal(types, batch.charges.squeeze(1).long().numpy())


def test_datamodule_remove_h_and_empty_split():
    dm = MoleculeDataModule(QM9(DATA_DIR), batch_size=8, remove_h=True, subset={"train": 40})
    batch = next(iter(dm.train_dataloader()))
    assert batch.x.shape[1] == 4 and (batch.charges != 1).all()
    with pytest.raises(ValueError, match="split 'valid' .* empty; check data.subset.valid"):
        MoleculeDataModule(QM9(DATA_DIR), subset={"valid": 0}).setup()


def test_cache_is_used_as_is_without_qm9pack(monkeypatch, tmp_path, small_source):
    """A GPU machine may get the cache but not qm9pack: the cache loads; without a cache the error says what to do."""
    import gaga.data.qm9 as qm9_module

    build_qm9_cache(tmp_path, small_source)
    monkeypatch.setattr(qm9_module, "find_spec", lambda name: None)
    assert len(load_qm9(tmp_path)) == 90
    with pytest.raises(ModuleNotFoundError, match="pip install qm9pack"):
        load_qm9(tmp_path / "empty")


def test_a_training_subset_samples_sizes_from_the_full_splits_p_n(qm9_train, tmp_path):
    """data.subset.train trains on part of the split; p(N), which sampling draws from, stays the full split's."""
    datamodule = MoleculeDataModule(QM9(DATA_DIR), subset={"train": 200}, stats_dir=tmp_path)
    sizes, counts = np.unique(qm9_train.num_atoms, return_counts=True)
    assert datamodule.statistics.num_atoms_hist == dict(zip(sizes.tolist(), counts.tolist(), strict=True))
    assert len(datamodule.splits["train"]) == 200

"""GEOM-Drugs readers on small inputs of both downloadable forms, written here from RDKit ETKDG conformers.

Checks counts, elements, coordinates, the lowest-energy selection, the by-molecule split and every bad-input error.
"""

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from gaga.data.drugs import (
    DrugsDataMissing,
    GeomDrugs,
    build_drugs_cache,
    cache_path,
    load_drugs,
    molecule_runs,
    read_edm_npy,
    split_by_molecule,
)
from gaga.data.elements import DRUGS_ATOMS
from gaga.data.rdkit_io import read_rdkit_folder

# SMILES -> ETKDG conformers generated; the first has more than 30, so the cut at 30 matters.
MOLECULES = {
    "CS(=O)(=O)c1ccc(Br)cc1": 35,
    "OCCNC(=O)c1ccc(Cl)cc1": 8,
    "Nc1ccccc1C(F)(F)F": 5,
    "CC(=O)Nc1ccc(O)cc1": 6,
}
KEEP = 30


def _embed(smiles: str, count: int, seed: int):
    """Single-conformer RDKit molecules (with hydrogens) from ETKDG."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=count, randomSeed=seed))
    assert len(ids) == count
    return [Chem.Mol(mol, confId=i) for i in ids]


def _pickle_name(smiles: str) -> str:
    return "drugs/" + smiles.replace("/", "_") + ".pickle"


def _write_geom_pickle(path: Path, smiles: str, conformers, energies) -> None:
    """One molecule in GEOM's rdkit_folder pickle layout."""
    records = [
        {"geom_id": 1000 + i, "totalenergy": float(e), "boltzmannweight": 0.0, "rd_mol": mol}
        for i, (mol, e) in enumerate(zip(conformers, energies, strict=True))
    ]
    path.write_bytes(pickle.dumps({"smiles": smiles, "totalconfs": len(records), "conformers": records}))


class Geom:
    """The two source folders of one small GEOM-Drugs, and what a reader must return from them."""

    def __init__(self, root: Path):
        rng = np.random.default_rng(0)
        self.rdkit_root, self.edm = root / "download", root / "edm"
        folder = self.rdkit_root / "rdkit_folder"
        (folder / "drugs").mkdir(parents=True)
        self.edm.mkdir()
        summary = {"C1CC1O": {"totalconfs": 0}}  # GEOM lists molecules without conformers and without pickle_path
        self.atomic_numbers, self.positions = [], []  # per molecule: Z [n], kept positions [k, n, 3] lowest first
        for seed, (smiles, count) in enumerate(MOLECULES.items()):
            conformers = _embed(smiles, count, seed)
            energies = -80.0 + 0.001 * rng.permutation(count)  # Hartree-like, in a shuffled order
            _write_geom_pickle(folder / _pickle_name(smiles), smiles, conformers, energies)
            summary[smiles] = {"pickle_path": _pickle_name(smiles), "totalconfs": count, "charge": 0}
            kept = np.argsort(energies)[:KEEP]
            self.atomic_numbers.append(np.array([a.GetAtomicNum() for a in conformers[0].GetAtoms()]))
            self.positions.append(np.stack([conformers[i].GetConformer().GetPositions() for i in kept]))
        summary["CCO"] = {"pickle_path": _pickle_name("CCO"), "totalconfs": 0}  # a pickle with no conformers
        _write_geom_pickle(folder / _pickle_name("CCO"), "CCO", [], [])
        (folder / "summary_drugs.json").write_text(json.dumps(summary))
        self._write_edm_files()

    def _write_edm_files(self) -> None:
        """EDM's build_geom_dataset.py output: rows [conformer id, Z, x, y, z], atoms per conformer, SMILES."""
        rows, counts = [], []
        for z, positions in zip(self.atomic_numbers, self.positions, strict=True):
            for xyz in positions:
                ids = np.full((len(z), 1), len(counts), dtype=float)
                rows.append(np.hstack([ids, z[:, None].astype(float), xyz]))
                counts.append(len(z))
        np.save(self.edm / "geom_drugs_30.npy", np.vstack(rows))
        np.save(self.edm / "geom_drugs_n_30.npy", np.array(counts))
        (self.edm / "geom_drugs_smiles.txt").write_text("".join(s + "\n" for s in MOLECULES))

    @property
    def conformers_per_molecule(self) -> np.ndarray:
        return np.array([len(p) for p in self.positions])


@pytest.fixture(scope="module")
def geom(tmp_path_factory) -> Geom:
    return Geom(tmp_path_factory.mktemp("geom"))


@pytest.fixture(scope="module")
def cached(geom, tmp_path_factory) -> Path:
    """A valid cache built from EDM's files, copied into tests that must not see it overwritten."""
    return build_drugs_cache(geom.edm, tmp_path_factory.mktemp("cache"), progress=False)


def _check_against_oracle(molecules, geom: Geom) -> None:
    per_molecule = geom.conformers_per_molecule
    assert per_molecule.tolist() == [30, 8, 5, 6]
    assert len(molecules) == per_molecule.sum() == 49
    np.testing.assert_array_equal(molecules.mol_ids, np.repeat(np.arange(len(MOLECULES)), per_molecule))
    expected_z = [z for z, p in zip(geom.atomic_numbers, geom.positions, strict=True) for _ in p]
    expected_xyz = [xyz for p in geom.positions for xyz in p]
    for i, (z, xyz) in enumerate(molecules):
        np.testing.assert_array_equal(z, expected_z[i])
        np.testing.assert_allclose(xyz, expected_xyz[i], atol=1e-5)
    assert set(np.unique(molecules.atomic_numbers)) == {1, 6, 7, 8, 9, 16, 17, 35}
    assert set(np.unique(molecules.atomic_numbers)) <= set(DRUGS_ATOMS.atomic_numbers)


@pytest.mark.parametrize("form", ["rdkit_folder", "edm_npy"])
def test_both_forms_give_the_30_lowest_energy_conformers(geom, tmp_path, form):
    source = geom.rdkit_root if form == "rdkit_folder" else geom.edm
    path = build_drugs_cache(source, tmp_path, progress=False)
    assert path == cache_path(tmp_path, 30)
    molecules = load_drugs(tmp_path)  # from the cache alone, the download no longer needed
    _check_against_oracle(molecules, geom)
    assert molecules.smiles == [
        s for s, k in zip(MOLECULES, geom.conformers_per_molecule, strict=True) for _ in range(k)
    ]


def test_parallel_pickle_reading_gives_the_same_molecules(geom):
    folder = geom.rdkit_root / "rdkit_folder"
    serial = read_rdkit_folder(folder, progress=False)
    parallel = read_rdkit_folder(folder, progress=False, workers=2)
    np.testing.assert_array_equal(serial.positions, parallel.positions)
    np.testing.assert_array_equal(serial.atomic_numbers, parallel.atomic_numbers)
    np.testing.assert_array_equal(serial.mol_ids, parallel.mol_ids)


def test_edm_npy_groups_identical_neighbours_and_drops_ambiguous_smiles(geom, tmp_path, caplog):
    """A molecule cut in two SMILES lines (as adjacent stereoisomers look) stays one group, never split."""
    shutil.copytree(geom.edm, tmp_path / "edm")
    smiles = list(MOLECULES)
    (tmp_path / "edm" / "geom_drugs_smiles.txt").write_text("\n".join([smiles[0], smiles[0] + "x", *smiles[1:]]))
    molecules = load_drugs(tmp_path / "data", tmp_path / "edm")
    np.testing.assert_array_equal(molecules.mol_ids, np.repeat(np.arange(4), geom.conformers_per_molecule))
    assert molecules.smiles == []
    assert "5 SMILES for 4 conformer groups" in caplog.text


@pytest.mark.parametrize("block_rows", [1, 2, 5, 1 << 22])
def test_molecule_runs_follow_atom_sequences_in_any_block_size(block_rows):
    conformers = [[6, 1], [6, 1], [1, 6], [6, 1, 1], [6, 1, 1], [8], [8], [6, 1, 1]]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in conformers])])
    runs = molecule_runs(np.concatenate(conformers).astype(np.int8), offsets, block_rows)
    assert runs.tolist() == [0, 0, 1, 2, 2, 3, 3, 4]


def test_edm_table_read_in_small_blocks_is_the_same(geom, tmp_path):
    whole, blocks = read_edm_npy(geom.edm), read_edm_npy(geom.edm, block_rows=50)
    np.testing.assert_array_equal(whole.positions, blocks.positions)
    np.testing.assert_array_equal(whole.mol_ids, blocks.mol_ids)
    shutil.copytree(geom.edm, tmp_path / "edm")
    _edit_table(tmp_path / "edm", lambda t: _set(t, 777, 4, np.inf))
    with pytest.raises(ValueError, match="row 777 "):
        read_edm_npy(tmp_path / "edm", block_rows=50)


def test_split_keeps_every_conformer_of_a_molecule_together():
    counts = np.random.default_rng(1).integers(1, 31, size=1000)
    mol_ids = np.repeat(np.arange(1000), counts)
    split = split_by_molecule(mol_ids, seed=0)
    molecules = {name: set(mol_ids[indices]) for name, indices in split.items()}
    assert [len(molecules[name]) for name in ("train", "valid", "test")] == [800, 100, 100]  # EDM: 0.1 / 0.1
    assert not (
        molecules["train"] & molecules["valid"]
        or molecules["train"] & molecules["test"]
        or molecules["valid"] & molecules["test"]
    )
    np.testing.assert_array_equal(np.sort(np.concatenate(list(split.values()))), np.arange(len(mol_ids)))
    for name, indices in split.items():  # whole molecules: all of their conformers
        assert len(indices) == counts[sorted(molecules[name])].sum()
    np.testing.assert_array_equal(split_by_molecule(mol_ids, seed=0)["test"], split["test"])
    assert molecules["test"] != set(mol_ids[split_by_molecule(mol_ids, seed=1)["test"]])
    assert len(set(mol_ids[split_by_molecule(mol_ids, valid_fraction=0.25)["valid"]])) == 250


def test_split_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"split \['valid', 'test'\] would be empty: 5 molecules"):
        split_by_molecule(np.arange(5))
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_by_molecule(np.arange(100), valid_fraction=0.6, test_fraction=0.5)


@pytest.mark.parametrize("source", [None, "nowhere"])
def test_missing_data_says_where_it_looked_what_to_get_and_how_to_build(tmp_path, source):
    source = None if source is None else tmp_path / source
    with pytest.raises(DrugsDataMissing) as error:
        load_drugs(tmp_path / "data", source)
    message = str(error.value)
    for needed in (
        str(cache_path(tmp_path / "data").resolve()),
        "geom_drugs_30.npy",
        "geom_drugs_n_30.npy",
        "geom_drugs_smiles.txt",
        "summary_drugs.json",
        "rdkit_folder.tar.gz",
        "doi:10.7910/DVN/JNGTDF",
        "ehoogeboom/e3_diffusion_for_molecules",
        "python -m gaga.data build drugs --source PATH",
    ):
        assert needed in message
    assert (str(source.resolve()) if source else "no source folder was given") in message
    with pytest.raises(DrugsDataMissing, match="no source files found"):
        GeomDrugs(tmp_path / "data", source).build()


def test_cache_is_reused_rebuilt_when_stale_or_corrupt(geom, tmp_path):
    source = tmp_path / "edm"
    shutil.copytree(geom.edm, source)
    drugs = GeomDrugs(tmp_path / "data", source)
    assert len(drugs.load()) == 49
    assert len(load_drugs(tmp_path / "data", tmp_path / "deleted-download")) == 49
    renamed = ["Cc1ccc(S(C)(=O)=O)cc1Br", *list(MOLECULES)[1:]]
    (source / "geom_drugs_smiles.txt").write_text("\n".join(renamed))
    assert drugs.load().smiles[0] == renamed[0]  # stale: rebuilt from the edited source
    cache_path(tmp_path / "data").write_bytes(b"not a zip file")
    with pytest.raises(DrugsDataMissing, match="corrupt"):
        load_drugs(tmp_path / "data")
    assert drugs.load().smiles[0] == renamed[0]  # corrupt: rebuilt


def test_source_object_splits_whole_molecules(geom, tmp_path):
    drugs = GeomDrugs(tmp_path, geom.edm, split_seed=3, valid_fraction=0.25, test_fraction=0.25)
    molecules = drugs.load()
    split = drugs.split(molecules)
    assert [len(set(molecules.mol_ids[split[name]])) for name in ("train", "valid", "test")] == [2, 1, 1]
    assert sorted(np.concatenate(list(split.values()))) == list(range(49))
    assert drugs.cache_key() == "drugs30-seed3-valid0.25-test0.25"


# --- bad input: each an error naming the file, the record and the fix; the old cache stays ------------


def _edit_table(folder: Path, edit) -> None:
    path = folder / "geom_drugs_30.npy"
    table = np.load(path)
    np.save(path, edit(table))


def _edit_counts(folder: Path, conformer: int, delta: float) -> None:
    counts = np.load(folder / "geom_drugs_n_30.npy") + np.eye(49)[conformer] * delta
    np.save(folder / "geom_drugs_n_30.npy", counts)


def _truncate(path: Path, num_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:-num_bytes])


def _set(table, row, column, value):
    table[row, column] = value
    return table


def _edit_pickle(folder: Path, smiles: str, edit) -> None:
    path = folder / "rdkit_folder" / _pickle_name(smiles)
    record = pickle.loads(path.read_bytes())
    edit(record["conformers"])
    path.write_bytes(pickle.dumps(record))


def _nan_atom(conformers) -> None:
    from rdkit.Geometry import Point3D

    lowest = min(range(len(conformers)), key=lambda i: conformers[i]["totalenergy"])
    conformers[lowest]["rd_mol"].GetConformer().SetAtomPosition(3, Point3D(float("nan"), 0.0, 0.0))


def _selenium(conformers) -> None:
    conformers[2]["rd_mol"] = _embed("C[Se]c1ccccc1", 1, 0)[0]


FIRST, SECOND = list(MOLECULES)[:2]
ROW_IN_CONFORMER_3 = 3 * 18 + 4  # the first molecule has 18 atoms (C7H7BrO2S)
BAD_INPUTS = {
    "truncated npy": ("edm", lambda f: _truncate(f / "geom_drugs_30.npy", 200), ["geom_drugs_30.npy", "truncated"]),
    "npy with 4 columns": ("edm", lambda f: _edit_table(f, lambda t: t[:, :4]), ["geom_drugs_30.npy", "shape"]),
    "edited element": (
        "edm",
        lambda f: _edit_table(f, lambda t: _set(t, ROW_IN_CONFORMER_3, 1, 34)),
        ["geom_drugs_30.npy", f"row {ROW_IN_CONFORMER_3} (conformer 3)", "Se (Z=34)"],
    ),
    "fractional element": (
        "edm",
        lambda f: _edit_table(f, lambda t: _set(t, 20, 1, 6.5)),
        ["row 20 (conformer 1)", "6.5 is not a whole number"],
    ),
    "NaN coordinate": (
        "edm",
        lambda f: _edit_table(f, lambda t: _set(t, ROW_IN_CONFORMER_3, 3, np.nan)),
        [f"row {ROW_IN_CONFORMER_3} (conformer 3)", "NaN"],
    ),
    "edited conformer id": (
        "edm",
        lambda f: _edit_table(f, lambda t: _set(t, 40, 0, 7)),
        ["row 40 (conformer 2)", "conformer id 7"],
    ),
    "counts not summing to rows": (
        "edm",
        lambda f: np.save(f / "geom_drugs_n_30.npy", np.full(49, 16)),
        ["geom_drugs_n_30.npy", "sum to 784", "has 929 rows"],
    ),
    "fractional atom count": ("edm", lambda f: _edit_counts(f, 0, 0.5), ["geom_drugs_n_30.npy", "whole numbers"]),
    "SMILES file short": (
        "edm",
        lambda f: (f / "geom_drugs_smiles.txt").write_text(FIRST),
        ["geom_drugs_smiles.txt", "1 SMILES", "4 molecules"],
    ),
    "unreadable pickle": (
        "rdkit",
        lambda f: (f / "rdkit_folder" / _pickle_name(SECOND)).write_bytes(b"\x80\x04junk"),
        [_pickle_name(SECOND), SECOND, "unreadable GEOM pickle", "re-extract"],
    ),
    "missing pickle": (
        "rdkit",
        lambda f: (f / "rdkit_folder" / _pickle_name(SECOND)).unlink(),
        [_pickle_name(SECOND), "missing", "re-extract"],
    ),
    "unknown element": (
        "rdkit",
        lambda f: _edit_pickle(f, SECOND, _selenium),
        [_pickle_name(SECOND), "conformer 2 (geom_id 1002)", "Se (Z=34)", "16 GEOM-Drugs"],
    ),
    "NaN in a kept conformer": ("rdkit", lambda f: _edit_pickle(f, FIRST, _nan_atom), [_pickle_name(FIRST), "NaN"]),
    "damaged summary": (
        "rdkit",
        lambda f: (f / "rdkit_folder" / "summary_drugs.json").write_text("{"),
        ["summary_drugs.json", "cannot read the JSON summary"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_named_and_leaves_the_cache_intact(geom, cached, tmp_path, case):
    form, damage, fragments = BAD_INPUTS[case]
    source = tmp_path / "source"
    shutil.copytree(geom.edm if form == "edm" else geom.rdkit_root, source)
    damage(source)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(cached, data / cached.name)
    before = hashlib.sha256(cached.read_bytes()).hexdigest()
    with pytest.raises(ValueError) as error:
        build_drugs_cache(source, data, progress=False)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert hashlib.sha256((data / cached.name).read_bytes()).hexdigest() == before
    assert sorted(p.name for p in data.iterdir()) == [cached.name]  # no temp file left behind


def _train_overrides(tmp_path, *extra):
    return [
        "backbone=geoldm",
        "data=drugs",
        f"paths.data_dir={tmp_path / 'data'}",
        "debug=fast_dev_run",
        "logger=csv",
        "callbacks=none",
        "backbone.net.hidden_nf=16",
        "backbone.net.n_layers=1",
        *extra,
    ]


def test_train_py_trains_geoldm_on_geom_drugs(geom, tmp_path):
    """`python train.py backbone=geoldm data=drugs` on GEOM-format files: composes, finds v_hat on latents, trains."""
    from gaga.cli import run_training
    from gaga.config import compose

    overrides = _train_overrides(
        tmp_path,
        f"paths.drugs_source={geom.edm}",
        "data.source.valid_fraction=0.25",
        "data.source.test_fraction=0.25",
        "gaga.t_star=500",
    )
    metrics = run_training(compose("train", overrides, output_dir=str(tmp_path)))["metrics"]
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["train/reconstruction"])
    assert np.isfinite(metrics["val/nll"])


def test_train_py_geoldm_without_drugs_files_stops_with_the_data_message(tmp_path):
    from gaga.cli import run_training
    from gaga.config import compose

    cfg = compose("train", _train_overrides(tmp_path), output_dir=str(tmp_path))
    with pytest.raises(SystemExit, match="geom_drugs_30.npy") as stop:
        run_training(cfg)
    assert "python -m gaga.data build drugs --source PATH" in str(stop.value)

"""`python -m gaga.evaluate` end to end on files written from real QM9 molecules, on malformed files, and without
GEOM-Drugs; plus the training-SMILES cache it relies on.

Oracle: the library's `evaluate_molecules` on the same molecules, which tests/test_metrics_* hold to EDM.
One test starts the module as a program; the others call its `main` in process, to spare interpreter starts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gaga.evaluate import main
from gaga.io import write_sdf, write_xyz, write_xyz_folder
from gaga.metrics import evaluate_molecules, training_smiles
from gaga.metrics.references import cached_training_smiles, dataset_reference

REPO_ROOT = Path(__file__).resolve().parents[1]
QM9_ARGS = ["--data", "qm9", "--data-dir", str(REPO_ROOT / "data"), "--quiet", "--strain-molecules", "0"]


@pytest.fixture(scope="module")
def samples(qm9_sample):
    return qm9_sample.subset(np.arange(300))


@pytest.fixture(scope="module")
def expected(samples, qm9_sample):
    """Metrics of the samples computed in process; training SMILES from molecules 280..999, so 20 samples are known."""
    train = training_smiles(qm9_sample.subset(np.arange(280, 1000)), progress=False)
    reference = dataset_reference("qm9", REPO_ROOT / "data", progress=False, with_train_smiles=False)
    metrics = evaluate_molecules(samples, "qm9", set(train), reference.geometry, progress=False, strain_molecules=0)
    return train, metrics


def assert_report_matches(report: dict, metrics: dict, tolerance: float) -> None:
    assert report["dataset"] == "qm9" and metrics.keys() <= report.keys()
    for key, value in metrics.items():
        assert report[key] == pytest.approx(value, abs=tolerance), key
    assert 0.92 < report["novelty"] < 0.95  # 20 of the ~298 unique valid ones are training molecules


def test_module_runs_as_a_program_on_multi_molecule_xyz(tmp_path, samples, expected):
    train, metrics = expected
    write_xyz(tmp_path / "samples.xyz", samples)
    (tmp_path / "train.smi").write_text("\n".join(train) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "gaga.evaluate", "samples.xyz", *QM9_ARGS, "--train-smiles", "train.smi"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_report_matches(json.loads((tmp_path / "metrics.json").read_text()), metrics, 1e-6)  # XYZ: 6 decimals
    assert "molecule stability" in result.stdout and "13083 molecules of the qm9 test split" in result.stdout


@pytest.mark.parametrize("name, writer", [("samples.sdf", write_sdf), ("folder", write_xyz_folder)])
def test_sdf_and_xyz_folder_give_the_library_figures(tmp_path, samples, expected, name, writer):
    train, metrics = expected
    writer(tmp_path / name, samples)
    (tmp_path / "train.smi").write_text("\n".join(train) + "\n")
    out = tmp_path / "metrics.json"
    train_file = str(tmp_path / "train.smi")
    plots = ["--plots"] if name.endswith("sdf") else []
    assert main([str(tmp_path / name), *QM9_ARGS, "--train-smiles", train_file, "--out", str(out), *plots]) == 0
    # SDF keeps 4 decimals: a borderline bond may flip, moving a fraction by 1/300 at most
    assert_report_matches(json.loads(out.read_text()), metrics, 1.01 / 300 if name.endswith("sdf") else 1e-6)
    assert (tmp_path / "distributions.png").is_file() == bool(plots)
    if plots:
        from PIL import Image

        with Image.open(tmp_path / "distributions.png") as image:
            assert image.format == "PNG" and image.size[0] > 1000


def test_malformed_files_fail_with_file_and_line(tmp_path, capsys):
    (tmp_path / "bad.xyz").write_text("2\ncomment\nC 0 0 0\nQ 1 0 0\n")
    out = tmp_path / "metrics.json"
    assert main([str(tmp_path / "bad.xyz"), *QM9_ARGS, "--out", str(out)]) == 2
    assert "bad.xyz, line 4: unknown element symbol 'Q'" in capsys.readouterr().err
    (tmp_path / "sulfur.xyz").write_text("1\ncomment\nS 0 0 0\n")
    assert main([str(tmp_path / "sulfur.xyz"), *QM9_ARGS, "--train-smiles", "/dev/null", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "sulfur.xyz: molecule 0: element S (Z=16) is not in the qm9 atom types" in error and "'drugs'" in error
    assert not out.exists()


def test_drugs_without_its_cache_skips_references_with_a_note(tmp_path, samples, capsys):
    write_xyz(tmp_path / "samples.xyz", samples)
    out = tmp_path / "metrics.json"
    args = [str(tmp_path / "samples.xyz"), "--data", "drugs", "--data-dir", str(tmp_path / "empty"), "--quiet"]
    assert main([*args, "--strain-molecules", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "novelty" not in report and not any(key.startswith("w1_") for key in report)
    assert "note: novelty and w1_* skipped" in capsys.readouterr().out and "skipped" in report["notes"][0]
    in_process = evaluate_molecules(samples, "drugs", progress=False, strain_molecules=0)
    assert report["atom_stability"] == pytest.approx(in_process["atom_stability"])


def test_training_smiles_cache_is_reused_only_for_the_same_molecules(tmp_path, qm9_sample):
    first, second = qm9_sample.subset(np.arange(60)), qm9_sample.subset(np.arange(60, 100))
    cache = tmp_path / "train_smiles.txt"
    smiles = cached_training_smiles(first, "qm9", cache, progress=False)
    assert smiles == training_smiles(first, progress=False) and len(smiles) >= 55
    cache.write_text(cache.read_text() + "MARKER\n")  # a cache hit returns the file as it is
    assert cached_training_smiles(first, "qm9", cache, progress=False)[-1] == "MARKER"
    assert cached_training_smiles(second, "qm9", cache, progress=False) == training_smiles(second, progress=False)

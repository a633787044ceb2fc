"""EDM's conditional-generation table: the baselines with an oracle predictor (the molecules' true values) against
numpy, pandas and the paper's figures; the bootstrap interval against the normal approximation; the generator row on
real molecules asked for their own values; the command's table, JSON and one-line errors."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from gaga.data.datamodule import MoleculeDataModule
from gaga.data.qm9 import QM9
from gaga.evaluate_conditional import (
    PUBLISHED_MAE,
    MedianPerSize,
    baselines,
    format_table,
    generator_estimate,
    halves,
    main,
    mean_absolute_error,
)
from tests.conftest import DATA_DIR, tiny_predictor, tiny_setup

PROPERTIES = ("alpha", "gap", "homo", "lumo", "mu", "Cv")


@pytest.fixture(scope="module")
def data_halves():
    """EDM's first and second halves of QM9's training split (their MoleculeSets carry every property)."""
    return halves(DATA_DIR, "alpha", remove_h=False)


def oracle(name: str):
    """A perfect predictor: each real molecule's own value (independent of the code under test)."""
    return lambda molecules: molecules.properties[name]


def test_oracle_baselines_are_numpys_and_match_the_papers_rows(data_halves):
    first, second = data_halves["first"], data_halves["second"]
    for name in PROPERTIES:
        rows = baselines(oracle(name), name, first, second, seed=3, draws=10)
        values = second.properties[name]
        shuffle = values[np.random.default_rng(3).permutation(len(values))]
        assert rows["lower_bound"].mae == 0 and rows["lower_bound"].high == 0
        assert rows["naive"].mae == pytest.approx(np.abs(values - shuffle).mean(), rel=1e-12)
        assert rows["lower_bound"].mae < rows["atoms"].mae < rows["naive"].mae
        # the paper's #Atoms row (a network on the atom count) is within 2 % of the per-count median; its naive row
        # (its predictor against shuffled values) within 2 % of the oracle's, except Cv (paper 6.857, here 4.57)
        assert rows["atoms"].mae == pytest.approx(PUBLISHED_MAE["atoms"]["EDM"][name], rel=0.02), name
        if name != "Cv":
            assert rows["naive"].mae == pytest.approx(PUBLISHED_MAE["naive"]["EDM"][name], rel=0.02), name


def test_atoms_baseline_is_a_pandas_groupby_median_with_the_overall_median_for_unseen_sizes(data_halves):
    first, second = data_halves["first"], data_halves["second"]
    first = first.subset(np.flatnonzero(first.num_atoms != 12))  # no 12-atom molecule to fit: the fallback
    assert (second.num_atoms == 12).any()
    fitted = pd.DataFrame({"n": first.num_atoms, "v": first.properties["gap"]})
    medians = fitted.groupby("n")["v"].median()
    expected = pd.Series(second.num_atoms).map(medians).fillna(fitted["v"].median()).to_numpy()
    np.testing.assert_allclose(MedianPerSize(first.num_atoms, first.properties["gap"])(second.num_atoms), expected)
    rows = baselines(oracle("gap"), "gap", first, second, seed=0, draws=10)
    assert rows["atoms"].mae == pytest.approx(np.abs(expected - second.properties["gap"]).mean(), rel=1e-12)


def test_bootstrap_interval_matches_the_normal_approximation():
    errors = np.random.default_rng(0).exponential(2.0, size=4000)
    estimate = mean_absolute_error(errors, seed=1)
    half_width = 1.96 * errors.std() / np.sqrt(len(errors))
    assert estimate.mae == pytest.approx(errors.mean()) and estimate.count == 4000
    assert estimate.low < estimate.mae < estimate.high
    assert estimate.high - estimate.low == pytest.approx(2 * half_width, rel=0.1)
    assert (estimate.low + estimate.high) / 2 == pytest.approx(errors.mean(), abs=0.2 * half_width)


def test_generator_row_on_real_molecules_asked_for_their_own_values_is_the_lower_bound(data_halves):
    module = MoleculeDataModule(QM9(DATA_DIR), subset={"train": 64, "valid": 32}, conditioning=["alpha"], half="first")
    predictor = tiny_predictor(module)
    second = data_halves["second"].subset(np.arange(300))
    rows = baselines(predictor.predict_molecules, "alpha", data_halves["first"], second, seed=0)
    as_generated = generator_estimate(predictor.predict_molecules, "alpha", second, seed=0)
    assert as_generated == rows["lower_bound"]
    without = second.subset(np.arange(10))
    without.properties = {}
    with pytest.raises(ValueError, match="carry no requested alpha values"):
        generator_estimate(predictor.predict_molecules, "alpha", without, seed=0)


def test_table_holds_our_rows_and_the_papers_figures_apart(data_halves):
    rows = baselines(oracle("alpha"), "alpha", data_halves["first"], data_halves["second"].subset(np.arange(500)), 0)
    table = format_table(rows, "alpha", "Bohr^3")
    lines = {line.split("  ")[0].strip(): line for line in table.splitlines()}
    assert "not run" in lines["EDM-style generator"] and "2.76" in lines["EDM-style generator"]
    assert "2.37" in lines["EDM-style generator"]  # GeoLDM's
    assert "9.01" in lines["Naive (upper bound)"] and "3.86" in lines["#Atoms"] and "0.1" in lines["QM9 (lower bound)"]
    assert f"{rows['atoms'].mae:.4g}" in lines["#Atoms"] and "EDM (paper)" in table and "GeoLDM (paper)" in table


def test_published_figures_are_those_of_docs_references():
    from gaga.config import REPO_ROOT

    [row] = [line for line in (REPO_ROOT / "docs/references.md").read_text().splitlines() if "conditional" in line]
    labels = {
        ("generator", "EDM"): "generator",
        ("naive", "EDM"): "naive",
        ("atoms", "EDM"): "#Atoms",
        ("lower_bound", "EDM"): "lower bound",
        ("generator", "GeoLDM"): "GeoLDM's generator row:",
    }
    for (name, paper), label in labels.items():
        found = re.search(re.escape(label) + r" ((?:[\d.]+ / ){5}[\d.]+)", row)
        assert found, label
        assert [float(v) for v in found.group(1).split(" / ")] == list(PUBLISHED_MAE[name][paper].values()), label


def save(model, path) -> None:
    """A checkpoint as train.py writes one (the model's own entries; no Lightning state)."""
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    module = MoleculeDataModule(QM9(DATA_DIR), subset={"train": 64, "valid": 32}, conditioning=["alpha"], half="first")
    save(tiny_predictor(module, hidden_nf=8, n_layers=1), folder / "predictor.ckpt")
    save(tiny_setup("edm")[1], folder / "edm.ckpt")
    save(tiny_setup("edm", conditioning=("mu",))[1], folder / "edm_mu.ckpt")
    save(tiny_setup("edm", conditioning=("alpha",))[1], folder / "edm_alpha.ckpt")
    return folder


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--predictor", "missing.ckpt"], r"missing.ckpt: no such checkpoint file"),
        (["--predictor", "{edm}"], r"edm.ckpt: not a property predictor \(its model is 'edm'\); pass --predictor"),
        (["--predictor", "{predictor}", "--generator", "{edm}"], r"edm.ckpt: not a conditional generator"),
        (
            ["--predictor", "{predictor}", "--generator", "{predictor}"],
            r"predictor.ckpt: not a generator \(its model is 'property_predictor'\)",
        ),
        (
            ["--predictor", "{predictor}", "--generator", "{edm_mu}"],
            r"conditioned on \['mu'\], the predictor predicts alpha",
        ),
    ],
    ids=["missing", "generator-as-predictor", "unconditional", "predictor-as-generator", "other-property"],
)
def test_bad_files_stop_with_one_line(checkpoints, arguments, message, capsys):
    paths = {name: str(checkpoints / f"{name}.ckpt") for name in ("edm", "predictor", "edm_mu")}
    assert main([argument.format(**paths) for argument in arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "Traceback" not in error
    assert re.search(message, error), error


def test_command_prints_the_baselines_and_writes_json(checkpoints, tmp_path, capsys):
    out = tmp_path / "conditional.json"
    arguments = ["--predictor", str(checkpoints / "predictor.ckpt"), "--reference-molecules", "200", "--out", str(out)]
    assert main([*arguments, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "property alpha (Bohr^3)" in printed and "#Atoms" in printed and f"wrote {out}" in printed
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"naive", "atoms", "lower_bound"} and report["reference_molecules"] == 200
    assert report["published"]["generator"] == {"EDM": 2.76, "GeoLDM": 2.37} and report["generator"] is None
    low, high = report["rows"]["atoms"]["ci95"]
    assert low <= report["rows"]["atoms"]["mae"] <= high


def test_command_scores_a_conditional_generator(checkpoints, tmp_path, capsys):
    """A tiny (untrained) EDM conditioned on alpha: its row holds the predictor's MAE on the molecules it generated
    against the values they were asked for, which the JSON and the table both report."""
    out = tmp_path / "conditional.json"
    arguments = ["--predictor", str(checkpoints / "predictor.ckpt"), "--generator", str(checkpoints / "edm_alpha.ckpt")]
    options = ["--samples", "6", "--batch-size", "3", "--reference-molecules", "50", "--out", str(out), "--quiet"]
    assert main([*arguments, *options]) == 0
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"generator", "naive", "atoms", "lower_bound"} and report["samples"] == 6
    generator = report["rows"]["generator"]
    assert generator["molecules"] == 6 and generator["ci95"][0] <= generator["mae"] <= generator["ci95"][1]
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("EDM-style generator"))
    assert f"{generator['mae']:.4g}" in line and "not run" not in line

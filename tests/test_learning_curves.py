"""experiments/learning_curves.py: its bootstrap interval against scipy's, and the verdict's rules (beats / ties /
loses by whether 95 % intervals are apart; the `gaga.features` default by issue 18's rule) on rows made here."""

import importlib.util
import sys

import numpy as np
import pytest
from scipy.stats import bootstrap

from gaga.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))  # the script's own imports (bench_setup, compare_samples)
spec = importlib.util.spec_from_file_location("learning_curves", REPO_ROOT / "experiments" / "learning_curves.py")
learning_curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning_curves)
sys.path.pop(0)


def test_bootstrap_interval_matches_scipy():
    values = np.random.default_rng(1).poisson(2.0, 300).astype(float)
    low, high = learning_curves.interval(values, np.mean, np.random.default_rng(0))
    expected = bootstrap((values,), np.mean, n_resamples=20000, method="percentile", random_state=0)
    assert low == pytest.approx(expected.confidence_interval.low, abs=0.03)
    assert high == pytest.approx(expected.confidence_interval.high, abs=0.03)


def row(arm: str, step: int, atom: float, fragments: float, width: float = 1.0) -> dict:
    """A row with the same half-width on every figure; molecule stability and validity equal to atom stability."""
    figures = {"atom_stability": atom, "fragments_per_mol": fragments, "mol_stability": atom, "validity": atom}
    out = {"arm": arm, "step": step}
    for key, value in figures.items():
        half = width / 10 if key == "fragments_per_mol" else width
        out.update({key: value, f"{key}_low": value - half, f"{key}_high": value + half})
    return out


def test_compare_reads_lower_fragments_as_better_and_overlap_as_a_tie():
    edm = row("edm", 5, 70.0, 2.5)
    assert learning_curves.compare(row("gaga_centred", 5, 75.0, 2.0), edm, "atom_stability") == "beats"
    assert learning_curves.compare(row("gaga_centred", 5, 75.0, 2.0), edm, "fragments_per_mol") == "beats"
    assert learning_curves.compare(row("gaga_centred", 5, 65.0, 3.0), edm, "fragments_per_mol") == "loses"
    assert learning_curves.compare(row("gaga_centred", 5, 71.5, 2.6), edm, "atom_stability") == "ties"


def test_molecules_need_both_thresholds():
    assert learning_curves.has_molecules(row("edm", 5, 80.0, 2.0))
    assert not learning_curves.has_molecules(row("edm", 5, 79.9, 1.5))
    assert not learning_curves.has_molecules(row("edm", 5, 90.0, 2.1))


@pytest.mark.parametrize(
    "kept, expected",
    [((85.0, 1.2), "kept"), ((81.5, 1.45), "centred"), ((78.0, 1.2), "centred"), ((85.0, 1.8), "centred")],
    ids=["kept apart and better", "overlapping", "kept worse on one figure", "mixed"],
)
def test_default_follows_the_largest_budget(kept, expected):
    rows = [row("gaga_centred", 10, 60.0, 3.0), row("gaga_kept", 10, 50.0, 4.0)]  # an earlier step does not decide
    rows += [row("gaga_centred", 20, 81.0, 1.4), row("gaga_kept", 20, *kept)]
    assert learning_curves.default_features(rows)[:2] == (expected, 20)


def test_verdict_without_both_variants_keeps_centred():
    rows = [row("edm", 5, 70.0, 2.5), row("gaga_centred", 5, 81.0, 1.5)]
    assert learning_curves.verdict(rows).endswith("Default gaga.features=centred; no step with both variants.")
    assert learning_curves.verdict(rows[:1]).startswith("No arm has molecules yet")

"""experiments/compare_samples.py: its Wilson intervals against scipy's, and its table from sample.py's JSON."""

import importlib.util
import json

import pytest
from scipy.stats import binomtest

from gaga.config import REPO_ROOT

spec = importlib.util.spec_from_file_location("compare_samples", REPO_ROOT / "experiments" / "compare_samples.py")
compare_samples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_samples)


@pytest.mark.parametrize("k, n", [(0, 100), (13, 100), (50, 100), (99, 100), (7, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = compare_samples.wilson_interval(k / n, n)
    assert low == pytest.approx(expected.low, abs=1e-4) and high == pytest.approx(expected.high, abs=1e-4)


def test_table_row_from_metrics_json(tmp_path, capsys, monkeypatch):
    metrics = {
        "num_molecules": 100,
        "network_evaluations": 511,
        "seconds_per_molecule": 1.25,
        "atom_stability": 0.5,
        "mol_stability": 0.0,
        "validity": 0.25,
        "valid_x_unique": 0.24,
        "connected": 0.1,
        "num_fragments": 3.5,
    }
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    monkeypatch.setattr("sys.argv", ["compare_samples.py", f"GAGA=x={tmp_path / 'm.json'}"])
    compare_samples.main()
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("| GAGA=x | 100 | 511 | 1.250 | 50.0 | 0.0 [0.0, 3.7] | 25.0 [17.5, 34.3]")

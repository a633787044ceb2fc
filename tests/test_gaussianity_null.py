"""Dataset mode's T_ID against Dep's noise floor: the "stays below" rule on hand-made curves, the null-raised
threshold, the null recorded with the result, and labelled plot panels with the null band."""

import numpy as np
import pytest

from gaga.gaussianity import FEATURES, POSITIONS, GaussianitySettings, find_t_star
from gaga.gaussianity.dataset_mode import first_below
from gaga.gaussianity.tstar import dep_threshold
from tests.conftest import EDM_ALPHA_BAR as ALPHA_BAR

GRID = np.arange(0, 201, 50)


def dipping(t):
    """Above 0.01 until t = 137 except a dip to 0.005 at 40..60 (a noisy estimate), then 0."""
    if 40 <= t <= 60:
        return 0.005
    return 0.02 if t < 137 else 0.0


def test_stays_rule_ignores_a_dip_that_comes_back():
    assert first_below(dipping, GRID, 0.01, bisection=False) == 50
    assert first_below(dipping, GRID, 0.01, bisection=False, rule="stays") == 150
    assert first_below(dipping, GRID, 0.01, bisection=True, rule="stays") == 137  # refined after the last failure
    assert first_below(dipping, GRID, 0.01, bisection=True) == 40  # the paper's literal rule lands in the dip
    assert first_below(lambda t: 0.02 if t == 200 else 0.0, GRID, 0.01, bisection=True, rule="stays") is None


def test_monotone_rule_uses_the_isotonic_fit():
    """Grid values 0.02, 0.005, 0.02, 0, 0: sklearn's non-increasing isotonic fit is 0.02, 0.0125, 0.0125, 0, 0."""
    from sklearn.isotonic import IsotonicRegression

    values = dict(zip(GRID.tolist(), [0.02, 0.005, 0.02, 0.0, 0.0], strict=True))
    fit = IsotonicRegression(increasing=False).fit_transform(GRID, list(values.values()))
    expected = int(GRID[np.argmax(fit <= 0.01)])
    assert expected == 150
    assert first_below(values.__getitem__, GRID, 0.01, bisection=False, rule="monotone") == expected
    assert first_below(values.__getitem__, GRID, 0.013, bisection=False, rule="monotone") == 50  # fit 0.0125
    with pytest.raises(ValueError, match="T_ID rule"):
        first_below(values.__getitem__, GRID, 0.01, bisection=False, rule="last")


def test_threshold_is_raised_to_the_null_quantile():
    settings = GaussianitySettings(eps_dep=0.01, dep_null_quantile=0.95)
    assert dep_threshold(settings, [0.001, 0.004, 0.002]) == 0.01
    null = [0.0, 0.012, 0.02, 0.005]
    assert dep_threshold(settings, null) == pytest.approx(np.quantile(null, 0.95, method="higher")) == 0.02
    assert dep_threshold(settings, []) == 0.01


@pytest.fixture(scope="module")
def small_result(sample_blocks):
    settings = GaussianitySettings(
        dataset_molecules=300, grid_step=100, workers=1, dep_null_draws=4, zero_com_blocks=(POSITIONS, FEATURES)
    )
    return find_t_star(*sample_blocks, ALPHA_BAR, settings, progress=False)


def test_null_is_recorded_and_t_id_is_where_the_monotone_fit_crosses(small_result):
    r = small_result
    for block in (POSITIONS, FEATURES):
        null = r.summary["dep_null"][block]
        assert len(null) == 4 and all(v >= 0 for v in null)
        eps = r.summary["eps_dep_used"][block]
        assert eps >= r.settings["eps_dep"]
        on_grid = {t: v for t, v in zip(r.curves["t"], r.curves[f"Dep:{block}"], strict=True) if t % 100 == 0}
        grid = np.array(sorted(on_grid))
        expected = first_below(on_grid.__getitem__, grid, eps, bisection=False, rule="monotone")
        assert expected - 100 < r.t_id[block] <= expected  # bisection refines inside the last grid bracket
    assert r.t_id[FEATURES] > 0  # one-hot columns depend on each other at t = 0


def test_every_panel_is_labelled_and_dep_has_the_null_band(small_result, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    small_result.plot(tmp_path / "tstar.png")
    axes = [a for a in figures[0].axes if a.get_visible()]
    assert len(axes) == len(small_result.panels())
    assert all(a.get_xlabel() and a.get_ylabel() and a.get_title() for a in axes)
    dep = next(a for a in axes if "Dep" in a.get_ylabel())
    assert any(text.get_text().startswith("null") for text in dep.get_legend().get_texts())

"""train.py's default run as a user sees it, without a W&B API key: readable console output (one line per event,
no carriage returns, no tips), and W&B offline with the run's own file holding its name, tags, summary (T*, T_ID,
T_DS, v_hat) and native line plots of the Gaussianity curves with their thresholds."""

import json

import pytest

from gaga.cli import run_training
from gaga.config import compose
from tests.train_runs import TINY_FIT, train_py, without_wandb_login
from tests.wandb_files import read_run


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """(run folder, stdout + stderr) of a tiny default run, in the environment of a machine without `wandb login`."""
    folder = tmp_path_factory.mktemp("default-run")
    done = train_py(*TINY_FIT, "gaga.eps_ds=0.05", f"hydra.run.dir={folder / 'run'}", env=without_wandb_login(folder))
    return folder / "run", done.stdout, done.stderr


def test_one_line_per_event_and_no_noise(default_run):
    _, out, err = default_run
    assert out.count("W&B: no API key configured, logging offline") == 1, out
    assert out.count("GAGA: T* = ") == 1 and out.count("GAGA: curves and plot in") == 1, out
    assert "epoch 1/1  train/loss" in out, out  # the progress bar's line when output is not a terminal
    assert "\r" not in out + err, "progress bars redrawn into a pipe"
    for noise in ("Tip", "TPU available", "deprecated", "wandb: "):
        assert noise not in out + err, noise


def test_wandb_run_has_name_tags_summary_and_curves(default_run):
    run_dir = default_run[0]
    result = json.loads((run_dir / "gaussianity/tstar.json").read_text())
    run = read_run(run_dir / "wandb")
    named = [o for o in TINY_FIT if not o.startswith(("experiment=", "~callbacks"))]
    assert run.name == "quickstart:" + ",".join([*named, "gaga.eps_ds=0.05"])
    assert run.group == ""  # a single run; sweeps group their jobs
    assert run.tags == ["edm", "qm9", f"T*={result['t_star']}"]

    assert run.summary["gaga/t_star"] == result["t_star"]
    for kind in ("t_id", "t_ds"):
        for block, step in result[kind].items():
            assert run.summary[f"gaga/{kind}.{block}"] == step, (kind, block)
    assert run.summary["gaga/v_hat.pos"] == pytest.approx(2.0, rel=0.1)  # unbiased coordinate variance / noise
    assert 0 < run.summary["gaga/v_hat.h"] < 0.05

    assert {"gaga/curves/D", "gaga/curves/Dep", "gaga/curves/H", "gaga/curves/v"} <= set(run.charts)
    assert run.charts["gaga/curves/D"]["panel_config"]["panelDefId"] == "wandb/lineseries/v0"
    lines = {}
    for step, key, value in run.table("gaga/curves/D_table")["data"]:
        lines.setdefault(key, {})[step] = value
    assert set(lines["eps = 0.05"].values()) == {0.05}  # the threshold drawn beside the curves
    curves = result["curves"]
    assert lines["positions"] == {
        t: d for t, d in zip(curves["t"], curves["D:positions"], strict=True) if d is not None
    }


def test_bad_setting_fails_before_data_load(tmp_path, capsys):
    cfg = compose("train", ["gaga.eps_ds=-1"], output_dir=str(tmp_path))
    with pytest.raises(SystemExit, match=r"^error: gaga.eps_ds=-1: gaga.eps_ds must be a number in \(0, 1\)"):
        run_training(cfg)
    assert "dataset qm9" not in capsys.readouterr().out  # the data summary comes after the data load


def test_epoch_lines_print_val_nll_only_on_epochs_that_validated(capsys, caplog):
    """Validating every 2nd epoch: epoch 1's line has no val/nll (Lightning still holds none, or a stale one),
    epoch 2's has the value just measured."""
    from gaga.callbacks.progress import EpochLines
    from tests.conftest import quiet_trainer, tiny_setup

    datamodule, model = tiny_setup(train=32)
    trainer = quiet_trainer(
        max_epochs=3,
        check_val_every_n_epoch=2,
        limit_val_batches=1,
        callbacks=[EpochLines()],
        enable_checkpointing=False,
        enable_progress_bar=True,
    )
    caplog.set_level("INFO", logger="gaga")
    trainer.fit(model, datamodule=datamodule)
    # one line per epoch, printed, or logged when an earlier run in this process gave the "gaga" logger a handler
    said = capsys.readouterr().out.splitlines() + [record.getMessage() for record in caplog.records]
    lines = [line for line in said if line.startswith("epoch ")]
    assert [("val/nll" in line) for line in lines] == [False, True, False], lines

"""GaussianityCallback on real QM9: T* found, cached, stored in the checkpoint; fixed and off settings; bad setups."""

import logging

import pytest
import torch

from gaga.callbacks.gaussianity import GaussianityCallback
from gaga.gaussianity import FEATURES, POSITIONS, TStarResult, estimate_variance
from tests.conftest import quiet_trainer, tiny_setup

SETTINGS = {"grid_step": 10, "dataset_molecules": 300, "eps_ds": 0.03, "eps_dep": 0.05, "workers": 1}


def fit_with(callback, tmp_path, zero_mean_features=True, logger=False):
    datamodule, model = tiny_setup(zero_mean_features=zero_mean_features)
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=logger,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer, model


def test_auto_finds_caches_and_checkpoints_t_star(tmp_path, caplog):
    callback = GaussianityCallback("auto", cache_dir=tmp_path / "cache", out_dir=tmp_path / "curves", **SETTINGS)
    trainer, model = fit_with(callback, tmp_path)
    t_star = callback.result.truncation_step(100)
    assert 0 < t_star < 100 and model.truncation.start_step == t_star
    assert model.truncation.record()["t_star"] == t_star
    assert model.truncation.record()["v_hat"]["pos"] == pytest.approx(2.0, rel=0.1)  # unbiased variance / 0.96 noise
    assert callback.result.settings["zero_com_blocks"] == list(model.zero_mean_blocks) == [POSITIONS, FEATURES]
    assert {p.name for p in (tmp_path / "curves").iterdir()} == {"tstar.json", "tstar_curves.csv", "tstar.png"}
    assert TStarResult.load(tmp_path / "curves").t_star == callback.result.t_star
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    assert torch.load(tmp_path / "m.ckpt", weights_only=True)["truncation"]["t_star"] == t_star

    caplog.set_level(logging.INFO)
    again = GaussianityCallback("auto", cache_dir=tmp_path / "cache", **SETTINGS)
    fit_with(again, tmp_path)
    assert "T* from cache" in caplog.text and again.result.t_star == callback.result.t_star


def test_a_new_evaluator_version_does_not_reuse_old_caches(tmp_path, monkeypatch):
    import gaga.callbacks.gaussianity as module

    fit_with(GaussianityCallback("auto", cache_dir=tmp_path / "cache", **SETTINGS), tmp_path)
    monkeypatch.setattr(module, "EVALUATOR_VERSION", module.EVALUATOR_VERSION + 1)
    fit_with(GaussianityCallback("auto", cache_dir=tmp_path / "cache", **SETTINGS), tmp_path)
    assert len(list((tmp_path / "cache").glob("tstar_*.json"))) == 2


def test_fixed_t_star_and_off(tmp_path):
    trainer, model = fit_with(GaussianityCallback(40, **SETTINGS), tmp_path)
    blocks, offsets = model.gaussianity_data(trainer.datamodule.ordered_loader("train"), progress=False)
    model_noise = estimate_variance(blocks, offsets, "unbiased", True, (POSITIONS, FEATURES))  # features projected
    assert model.truncation.v_hat_h == pytest.approx(model_noise.data[FEATURES] / model_noise.noise[FEATURES], rel=1e-9)
    assert model.truncation.start_step == 40 and model.truncation.start_gaussian().variance_pos == pytest.approx(
        1 - float(model.schedule.alpha2(torch.tensor(40))) * (1 - model.truncation.v_hat_pos)
    )
    _, plain = fit_with(GaussianityCallback("off"), tmp_path, zero_mean_features=False)
    assert plain.truncation.start_step == 100 and plain.truncation.record() is None
    start = plain.truncation.start_gaussian()
    assert (start.step, start.variance_pos, start.variance_h, start.mean_h) == (100, 1.0, 1.0, None)


def test_bad_settings_are_explained(tmp_path):
    with pytest.raises(ValueError, match="zero_mean_features=true"):
        fit_with(GaussianityCallback(40), tmp_path, zero_mean_features=False)
    with pytest.raises(ValueError, match="auto, off or a positive step"):
        GaussianityCallback(False)
    with pytest.raises(ValueError, match="unknown keys"):
        GaussianityCallback("auto", eps=0.1)


def test_curves_and_plot_reach_wandb(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="gaga-tests", save_dir=str(tmp_path), offline=True)
    callback = GaussianityCallback("auto", out_dir=tmp_path / "curves", **SETTINGS)
    fit_with(callback, tmp_path, logger=logger)
    logger.experiment.finish()
    media = [p.name for p in tmp_path.glob("wandb/offline-run-*/files/media/**/*")]
    assert any("tstar_curves" in name for name in media) and any("tstar_plot" in name for name in media), media

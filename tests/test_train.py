"""Backbone training end to end on real QM9 subsets: wiring, learning, exact resume, checkpoints, non-finite losses.

Resume and checkpoint tests run for every backbone (EDM, GeoLDM, flow matching).
"""

import pytest
import pytorch_lightning as pl
import torch

from gaga.cli import build_model, run_training
from gaga.config import compose
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.qm9 import QM9
from gaga.diffusion.losses import l2_loss
from gaga.models.checkpoints import load_model
from gaga.models.edm import EDM, NonFiniteLossError
from gaga.models.flow_matching import FlowMatching
from gaga.models.geoldm import GeoLDM
from gaga.models.vp import split_by_step
from tests.conftest import DATA_DIR, quiet_trainer, tiny_setup


def test_train_py_runs_fast_dev_run(tmp_path):
    cfg = compose("train", ["experiment=quickstart", "debug=fast_dev_run", "logger=csv"], output_dir=str(tmp_path))
    result = run_training(cfg)
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))
    assert "val/nll" in result["metrics"]


def test_overfits_eight_molecules():
    datamodule, model = tiny_setup(train=8, batch_size=8)
    batch = next(iter(datamodule.train_dataloader()))
    optimizer = model.configure_optimizers()
    losses = []
    for step in range(150):
        loss, _ = l2_loss(
            model.net,
            model.schedule,
            model.feature_nll,
            *model.diffusion_state(batch),
            batch.batch,
            batch.num_graphs,
            generator=torch.Generator().manual_seed(step % 4),
        )
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        losses.append(loss.mean().item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert last < 0.5 * first, (first, last)


def _fit(tmp_path, max_epochs: int, ckpt_path=None, backbone: str = "edm"):
    datamodule, model = tiny_setup(backbone)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer = quiet_trainer(max_epochs=max_epochs, callbacks=[checkpoints])
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, model


@pytest.mark.parametrize("backbone", ["edm", "geoldm", "flow_matching"])
def test_resume_continues_the_same_curve(tmp_path, backbone):
    full_trainer, full = _fit(tmp_path / "a", max_epochs=2, backbone=backbone)
    resumed_trainer, resumed = _fit(
        tmp_path / "b", max_epochs=2, ckpt_path=tmp_path / "a" / "epoch=0.ckpt", backbone=backbone
    )
    assert resumed_trainer.global_step == full_trainer.global_step == 8
    for name, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, msg=name)
    assert not torch.equal(full.net.egnn.embedding.weight, full.ema_net.egnn.embedding.weight)


@pytest.mark.parametrize("backbone, cls", [("edm", EDM), ("geoldm", GeoLDM), ("flow_matching", FlowMatching)])
def test_checkpoint_rebuilds_its_backbone_with_weights_only(tmp_path, backbone, cls):
    _, trained = _fit(tmp_path, max_epochs=1, backbone=backbone)
    rebuilt = load_model(tmp_path / "epoch=0.ckpt", backbone=backbone)
    assert type(rebuilt) is cls and rebuilt.hparams.net["hidden_nf"] == 16
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], value, msg=name)


def test_checkpoint_from_before_backbone_targets_loads_as_edm(tmp_path):
    _fit(tmp_path, max_epochs=1)
    checkpoint = torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)
    del checkpoint["backbone_target"]  # as written by gaga before GeoLDM existed
    checkpoint["hyper_parameters"]["optimizer"] = {"lr": 1e-3, "weight_decay": 1e-12, "amsgrad": True}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    model = load_model(tmp_path / "old.ckpt")
    assert type(model) is EDM and isinstance(model.configure_optimizers(), torch.optim.AdamW)


def optimisation_step(model, optimizer, batch, step: int = 0):
    """One training step in Lightning's order: training_step, backward, the pre-step hook, clipping, step, EMA."""
    loss = model.training_step(batch, step)
    optimizer.zero_grad()
    loss.backward()
    model.on_before_optimizer_step(optimizer)
    model.configure_gradient_clipping(optimizer)
    optimizer.step()
    model.on_train_batch_end(loss, batch, step)
    return loss


def test_nonfinite_loss_skips_then_stops():
    """A non-finite step leaves weights, optimiser state, EMA and the gradient-norm history as they were."""
    datamodule, model = tiny_setup()
    model.hparams.max_consecutive_nonfinite = 3
    batch = next(iter(datamodule.train_dataloader()))
    optimizer = model.configure_optimizers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.isfinite(optimisation_step(model, optimizer, batch))
    decay = model.hparams.ema_decay
    for name, value in model.ema_net.state_dict().items():  # EMA: decay * old + (1 - decay) * new
        expected = decay * before[f"ema_net.{name}"] + (1 - decay) * model.net.state_dict()[name]
        torch.testing.assert_close(value, expected, msg=name)
    with torch.no_grad():
        model.net.egnn.embedding_out.bias[0] = float("inf")  # a diverged network
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in optimizer.state[model.net.egnn.embedding.weight].items()}
    norms = model.gradient_guard.grad_norms.clone()
    for step in (1, 2):
        assert not torch.isfinite(optimisation_step(model, optimizer, batch, step))
    assert model.gradient_guard.total == 2 and torch.equal(model.gradient_guard.grad_norms, norms)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[name], msg=name, equal_nan=True)
    for name, value in optimizer.state[model.net.egnn.embedding.weight].items():
        assert torch.equal(value, moments[name]), name
    with pytest.raises(NonFiniteLossError, match="3 training steps in a row"):
        optimisation_step(model, optimizer, batch, 3)


def test_checkpoint_refuses_nonfinite_weights():
    _, model = tiny_setup()
    with torch.no_grad():
        model.net.egnn.embedding.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="non-finite weights"):
        model.on_save_checkpoint({"state_dict": model.state_dict()})


def test_build_model_from_config_sizes_features(tmp_path):
    cfg = compose("train", ["experiment=quickstart", "data.remove_h=true"], output_dir=str(tmp_path))
    datamodule = MoleculeDataModule(QM9(DATA_DIR), remove_h=True, subset={"train": 32})
    model = build_model(cfg, datamodule)
    assert model.net.num_features == 4 and model.hparams.net["hidden_nf"] == cfg.backbone.net.hidden_nf == 64


def test_loss_parts_by_step_explain_the_logged_loss(tmp_path):
    """train/l2 (t >= 1) and train/t0_nll (t = 0) are logged apart: each the mean over the molecules that drew it."""
    loss, t = torch.tensor([1.0, 2.0, -7.0, 3.0]), torch.tensor([5, 0, 0, 9])
    parts = split_by_step(loss, t)
    assert {k: float(v.nanmean()) for k, v in parts.items()} == {"l2": 2.0, "t0_nll": -2.5}
    assert torch.isnan(split_by_step(loss[:1], t[:1])["t0_nll"].nanmean())  # no molecule drew t = 0
    datamodule, model = tiny_setup()
    model.set_truncation({"t_star": 1, "v_hat": {"pos": 1.0, "h": 1.0}})  # t in {0, 1}: both parts appear
    terms = model.training_terms(next(iter(datamodule.train_dataloader())), torch.Generator().manual_seed(0))
    assert terms.keys() == {"loss", "l2", "t0_nll"}
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=0, log_every_n_steps=1, default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=datamodule)
    assert {"train/loss", "train/l2", "train/t0_nll", "train/steps_per_s"} <= set(trainer.callback_metrics)


def test_a_misspelt_backbone_setting_is_refused_with_the_valid_names():
    with pytest.raises(TypeError, match=r"unknown settings \['ema_dacay'\].*'ema_decay'"):
        tiny_setup(ema_dacay=0.9)


@pytest.mark.parametrize("backbone", ["edm", "geoldm", "flow_matching"])
@pytest.mark.parametrize("centred", [False, True])
def test_the_denoiser_centres_features_exactly_when_its_backbone_does(backbone, centred):
    """One setting: the backbone's zero_mean_features; a stale `net.zero_mean_features` (older checkpoints) is not
    read."""
    _, model = tiny_setup(backbone)
    stale = {**model.hparams.net, "zero_mean_features": not centred}
    _, model = tiny_setup(backbone, zero_mean_features=centred, net=stale)
    for network in (model.net, model.ema_net):
        assert network.zero_mean_features is centred

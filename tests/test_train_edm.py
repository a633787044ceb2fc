"""EDM training end to end on real QM9 subsets: wiring, learning, exact resume, non-finite losses."""

import pytest
import pytorch_lightning as pl
import torch

from gaga.cli import build_model, run_training
from gaga.config import compose
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.qm9 import QM9
from gaga.diffusion.losses import l2_loss
from gaga.models.edm import EDM, NonFiniteLossError
from tests.conftest import DATA_DIR

TINY_NET = {"_target_": "gaga.nn.EGNNDynamics", "hidden_nf": 16, "n_layers": 1}
SCHEDULE = {"_target_": "gaga.diffusion.schedules.NoiseSchedule", "timesteps": 100}


def tiny_setup(train: int = 64, batch_size: int = 16, **model_options):
    datamodule = MoleculeDataModule(
        QM9(DATA_DIR), batch_size=batch_size, subset={"train": train, "valid": 32, "test": 8}
    )
    stats = datamodule.statistics
    dataset = {"name": "qm9", "atom_symbols": stats.atom_symbols, "num_atoms_hist": stats.num_atoms_hist}
    model = EDM(
        net=TINY_NET, schedule=SCHEDULE, dataset=dataset, ema_decay=0.9, optimizer={"lr": 1e-3}, **model_options
    )
    return datamodule, model


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
            model.normalizer,
            *model.encode(batch),
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


def _fit(tmp_path, max_epochs: int, ckpt_path=None):
    datamodule, model = tiny_setup()
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        callbacks=[checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, model


def test_resume_continues_the_same_curve(tmp_path):
    full_trainer, full = _fit(tmp_path / "a", max_epochs=2)
    resumed_trainer, resumed = _fit(tmp_path / "b", max_epochs=2, ckpt_path=tmp_path / "a" / "epoch=0.ckpt")
    assert resumed_trainer.global_step == full_trainer.global_step == 8
    for name, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, msg=name)
    assert not torch.equal(full.net.egnn.embedding.weight, full.ema_net.egnn.embedding.weight)


def test_checkpoint_loads_with_weights_only(tmp_path):
    _fit(tmp_path, max_epochs=1)
    checkpoint = torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)
    rebuilt = EDM(**checkpoint["hyper_parameters"])
    rebuilt.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["hyper_parameters"]["net"]["hidden_nf"] == 16


def test_nonfinite_loss_skips_then_stops():
    datamodule, model = tiny_setup()
    model.hparams.max_consecutive_nonfinite = 3
    batch = next(iter(datamodule.train_dataloader()))
    assert torch.isfinite(model.training_step(batch, 0))
    with torch.no_grad():
        model.net.egnn.embedding_out.bias[0] = float("inf")  # a diverged network
    assert model.training_step(batch, 1) is None and model.training_step(batch, 2) is None
    assert model.nonfinite_total == 2
    with pytest.raises(NonFiniteLossError, match="3 training steps in a row"):
        model.training_step(batch, 3)


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

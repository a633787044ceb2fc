"""The property predictor (EDM's property EGNN): invariant to rotations, reflections, translations and atom order;
the same numbers as a dense transcription of EDM's masked computation; its L1 objective falls on real QM9; train.py's
CPU preset trains it and writes a checkpoint that loads back to the validation MAE it was ranked by."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import ortho_group
from torch_geometric.data import Batch

from gaga.checks import SettingsError, check_settings
from gaga.config import compose
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.qm9 import QM9
from gaga.models.checkpoints import load_model
from tests.conftest import DATA_DIR, tiny_predictor
from tests.train_runs import train_py


@pytest.fixture(scope="module")
def first_half() -> MoleculeDataModule:
    """64 molecules of EDM's first half with their polarisability (32 validation molecules: the label norms)."""
    module = MoleculeDataModule(
        QM9(DATA_DIR), batch_size=64, subset={"train": 64, "valid": 32, "test": 8}, conditioning=["alpha"], half="first"
    )
    module.setup()
    return module


@pytest.fixture(scope="module")
def batch(first_half) -> Batch:
    return next(iter(first_half.ordered_loader("train")))


def moved(batch: Batch, rotation: np.ndarray, shift: np.ndarray, generator: torch.Generator) -> Batch:
    """The batch rotated (or reflected), shifted and with each molecule's atoms in a random order."""
    order = torch.cat(
        [
            start + torch.randperm(int(end - start), generator=generator)
            for start, end in zip(batch.ptr[:-1], batch.ptr[1:], strict=True)
        ]
    )
    other = batch.clone()
    rotation, shift = torch.tensor(rotation, dtype=torch.float32), torch.tensor(shift, dtype=torch.float32)
    other.pos = batch.pos[order] @ rotation.T + shift
    other.x = batch.x[order]
    return other


def test_prediction_is_invariant_to_rotation_reflection_translation_and_atom_order(first_half, batch):
    model = tiny_predictor(first_half).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        reference = model(batch)
        for seed in range(3):
            rotation = ortho_group.rvs(3, random_state=seed)  # det +1 or -1: rotations and reflections
            shift = np.random.default_rng(seed).normal(scale=5.0, size=3)
            torch.testing.assert_close(model(moved(batch, rotation, shift, generator)), reference, atol=2e-4, rtol=1e-5)
        # not invariant to everything: stretching the molecules changes every prediction
        stretched = batch.clone()
        stretched.pos = batch.pos * 1.2
        assert (model(stretched) - reference).abs().min() > 1e-4


def dense_edm_prediction(model, batch: Batch) -> torch.Tensor:
    """EDM's property EGNN as its released code computes it, written here from its equations with dense padded
    tensors and masks (atom_mask, edge_mask without the diagonal), on the model's weights; normalised units."""
    net = model.net
    sizes = (batch.ptr[1:] - batch.ptr[:-1]).tolist()
    count, largest = len(sizes), max(sizes)
    one_hot = torch.zeros(count, largest, batch.x.shape[1])
    pos = torch.zeros(count, largest, 3)
    atom_mask = torch.zeros(count, largest, 1)
    for g, (start, size) in enumerate(zip(batch.ptr[:-1].tolist(), sizes, strict=True)):
        one_hot[g, :size], pos[g, :size], atom_mask[g, :size] = (
            batch.x[start : start + size],
            batch.pos[start:][:size],
            1,
        )
    edge_mask = atom_mask * atom_mask.transpose(1, 2) * (1 - torch.eye(largest))  # [B, n, n]
    radial = ((pos[:, :, None, :] - pos[:, None, :, :]) ** 2).sum(-1, keepdim=True)  # [B, n, n, 1]
    h = one_hot @ net.embedding.weight.T + net.embedding.bias
    for layer in net.layers:
        h_i = h[:, :, None, :].expand(-1, -1, largest, -1)
        h_j = h[:, None, :, :].expand(-1, largest, -1, -1)
        message = layer.edge_mlp(torch.cat([h_i, h_j, radial], dim=-1))
        message = message * layer.att_mlp(message) * edge_mask[..., None]
        h = h + layer.node_mlp(torch.cat([h, message.sum(dim=2)], dim=-1))
    pooled = (net.node_dec(h) * atom_mask).sum(dim=1)
    return net.graph_dec(pooled).squeeze(1)


def test_prediction_is_edms_dense_masked_computation(first_half, batch):
    model = tiny_predictor(first_half, seed=3).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model.normalised_prediction(batch), dense_edm_prediction(model, batch), atol=2e-4, rtol=1e-4
        )
        # in the property's unit: normalised x MAD + mean of the validation molecules (EDM's compute_mean_mad)
        valid = first_half.splits["valid"].properties["alpha"]
        mean, mad = valid.mean(), np.abs(valid - valid.mean()).mean()
        expected = dense_edm_prediction(model, batch).double().numpy() * mad + mean
        np.testing.assert_allclose(model(batch).double().numpy(), expected, rtol=1e-5, atol=1e-3)


def test_l1_objective_falls_on_real_qm9(first_half, batch):
    model = tiny_predictor(first_half, hidden_nf=32, seed=0)
    optimizer = model.configure_optimizers()
    with torch.no_grad():
        before = float(model.l1_loss(batch))
    for _ in range(40):
        optimizer.zero_grad()
        model.l1_loss(batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(model.l1_loss(batch))
    assert after < 0.7 * before, (before, after)


def test_predictor_needs_exactly_one_property(first_half, tmp_path):
    both = MoleculeDataModule(QM9(DATA_DIR), subset={"train": 64, "valid": 32}, conditioning=["alpha", "mu"])
    with pytest.raises(
        ValueError, match=r"data.conditioning=\['alpha', 'mu'\].*exactly one.*data.conditioning=\[alpha\]"
    ):
        tiny_predictor(both)
    for names in ([], ["alpha", "gap"]):
        cfg = compose(
            "train", ["experiment=property_predictor_qm9", f"data.conditioning=[{','.join(names)}]"], str(tmp_path)
        )
        with pytest.raises(SettingsError, match=r"data.conditioning=.*exactly one property"):
            check_settings(cfg)
    cfg = compose("train", ["experiment=property_predictor_qm9", "data.conditioning=[gap]"], str(tmp_path))
    check_settings(cfg)
    assert cfg.optimized_metric == "val/mae" and cfg.callbacks.model_checkpoint.monitor == "val/mae"
    assert cfg.gaga is None and cfg.callbacks.sample_quality is None
    published = {
        "backbone.net.hidden_nf": 128,
        "backbone.net.n_layers": 7,
        "backbone.net.attention": True,
        "backbone.optimizer.lr": 1e-3,
        "backbone.optimizer.weight_decay": 1e-16,
        "data.batch_size": 96,
        "trainer.max_epochs": 1000,
        "data.half": "first",
        "backbone.lr_schedule": "cosine",
    }
    assert {key: OmegaConf.select(cfg, key) for key in published} == published


def test_cosine_learning_rate_over_the_epochs(first_half):
    import pytorch_lightning as pl

    from tests.conftest import quiet_trainer

    class EpochRates(pl.Callback):
        def __init__(self):
            self.rates: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    model = tiny_predictor(first_half, lr_schedule="cosine")
    recorder = EpochRates()
    trainer = quiet_trainer(
        max_epochs=4, limit_train_batches=1, limit_val_batches=0, callbacks=[recorder], enable_checkpointing=False
    )
    trainer.fit(model, datamodule=first_half)
    # 1e-3 x (1 + cos(pi e / 4)) / 2 for e = 0..3
    assert recorder.rates == pytest.approx([1e-3, 8.5355339e-4, 5e-4, 1.4644661e-4], rel=1e-6)


def test_cpu_preset_trains_and_its_checkpoint_loads_back_to_its_validation_mae(tmp_path):
    train_py(
        "experiment=property_predictor_qm9_cpu",
        "data.conditioning=[alpha]",
        "backbone.net.hidden_nf=8",
        "backbone.net.n_layers=1",
        "data.subset.train=128",
        "data.subset.valid=48",
        "data.batch_size=32",
        "data.eval_batch_size=16",
        "trainer.max_epochs=2",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
    )
    best = sorted((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    assert len(best) == 1 and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    checkpoint = torch.load(best[0], weights_only=True)
    ranked_by = [value for key, value in checkpoint["callbacks"].items() if "ModelCheckpoint" in key][0]
    model = load_model(best[0])
    assert type(model).__name__ == "PropertyPredictor" and model.hparams.dataset["conditioning"]["norms"]["names"] == [
        "alpha"
    ]
    valid = MoleculeDataModule(
        QM9(DATA_DIR), subset={"train": 128, "valid": 48, "test": 256}, seed=42, conditioning=["alpha"], half="first"
    )
    valid.setup()
    molecules = valid.splits["valid"]
    mae = np.abs(model.predict_molecules(molecules, batch_size=7) - molecules.properties["alpha"]).mean()
    assert ranked_by["monitor"] == "val/mae"
    assert mae == pytest.approx(float(ranked_by["best_model_score"]), rel=1e-5)
    again = load_model(best[0]).predict_molecules(molecules)
    np.testing.assert_array_equal(again, model.predict_molecules(molecules))

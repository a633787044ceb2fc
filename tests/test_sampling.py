"""sample.py end to end on checkpoints trained here (EDM and GeoLDM), the safe loader, the sample-quality callback."""

import csv
import json

import pytest
import pytorch_lightning as pl
import torch

from gaga.callbacks.sample_quality import SampleQualityCallback
from gaga.cli import run_sampling
from gaga.config import REPO_ROOT, compose
from gaga.io import read_sdf, read_xyz
from gaga.models.checkpoints import CheckpointError, load_model
from gaga.sampling import generate
from tests.conftest import quiet_trainer, tiny_setup


@pytest.fixture(scope="module", params=["edm", "geoldm", "flow_matching"])
def checkpoint(tmp_path_factory, request):
    """A tiny backbone (T=100) trained for one epoch on 64 QM9 molecules, with the sample-quality callback on."""
    folder = tmp_path_factory.mktemp("ckpt")
    datamodule, model = tiny_setup(request.param)
    sampler = "euler" if request.param == "flow_matching" else "auto"  # dopri5 refuses a stride: it sets its own
    quality = SampleQualityCallback(every_n_epochs=1, num_molecules=6, batch_size=3, sampler=sampler, stride=10)
    trainer = quiet_trainer(max_epochs=1, default_root_dir=folder, callbacks=[quality])
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(folder / "model.ckpt")
    return folder / "model.ckpt", trainer.callback_metrics


def _final_call(path) -> int:
    """Diffusion samplers call the network once more at t = 0 (EDM's p(x, h | z_0)); an ODE ends at the data."""
    return 0 if _is_flow(path) else 1


def _is_flow(path) -> bool:
    return torch.load(path, weights_only=True)["hyper_parameters"]["backbone"] == "flow_matching"


def _grid_sampler(path) -> str:
    """A sampler whose evaluations the stride sets: flow matching's default (dopri5) sets its own, so Euler."""
    return "euler" if _is_flow(path) else "auto"


def test_callback_logs_sample_metrics(checkpoint):
    _, metrics = checkpoint
    assert 0.0 <= float(metrics["sample/atom_stability"]) <= 1.0
    assert float(metrics["sample/num_molecules"]) == 6


def test_sample_py_writes_files_and_flat_metrics(checkpoint, tmp_path):
    path, _ = checkpoint
    cfg = compose(
        "sample",
        [f"ckpt={path}", "n_samples=5", "batch_size=3", "stride=20", "strain_molecules=0", "pictures=0"]
        + [f"sampler={_grid_sampler(path)}"],
        output_dir=str(tmp_path),
    )
    report = run_sampling(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["network_evaluations"] == 100 // 20 + _final_call(path) and written["start_step"] == 100
    for key in ("atom_stability", "mol_stability", "validity", "uniqueness", "valid_x_unique", "novelty"):
        assert 0.0 <= written[key] <= 1.0, key
    assert written["molecules_per_second"] == pytest.approx(1 / report["seconds_per_molecule"])
    assert len(read_xyz(tmp_path / "samples.xyz")) == 5 and len(read_sdf(tmp_path / "samples.sdf")) == 5


def test_gaga_model_starts_at_t_star(checkpoint):
    model = load_model(checkpoint[0])
    model.set_truncation({"t_star": 40, "v_hat": {"pos": 1.9, "h": 0.01}})
    sampler = _grid_sampler(checkpoint[0])
    assert generate(model, 2, sampler=sampler, stride=4, progress=False).num_evaluations == 40 // 4 + _final_call(
        checkpoint[0]
    )
    ablation = generate(model, 2, sampler=sampler, stride=4, start="T", progress=False)
    assert ablation.start == 100 and ablation.num_evaluations == 100 // 4 + _final_call(checkpoint[0])


def test_the_truncation_is_its_own_checkpoint_entry_and_older_checkpoints_keep_theirs(checkpoint, tmp_path):
    """New checkpoints store GAGA's truncation as `truncation`; one written before that entry existed holds it as the
    `gaga` hyperparameter and loads with the same T* and start Gaussian; a malformed entry is refused in one line."""
    stored = torch.load(checkpoint[0], weights_only=True)
    record = {"t_star": 40, "v_hat": {"pos": 1.9, "h": 0.01}}
    assert "truncation" in stored and not stored["hyper_parameters"].get("gaga")
    older = {key: value for key, value in stored.items() if key != "truncation"}
    older["hyper_parameters"] = {**stored["hyper_parameters"], "gaga": record}
    torch.save(older, tmp_path / "older.ckpt")
    model = load_model(tmp_path / "older.ckpt")
    assert model.truncation.record() == record and model.truncation.start_step == 40
    torch.save({**stored, "truncation": record}, tmp_path / "newer.ckpt")
    assert load_model(tmp_path / "newer.ckpt").truncation.record() == record
    torch.save({**stored, "truncation": {"t_star": "soon"}}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="bad.ckpt: its truncation entry is not a GAGA truncation record"):
        load_model(tmp_path / "bad.ckpt")


def test_checkpoint_errors(checkpoint, tmp_path):
    path, _ = checkpoint
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="a qm9 dataset checkpoint, but dataset=drugs"):
        load_model(path, dataset="drugs")
    other = {"edm": "geoldm", "geoldm": "edm", "flow_matching": "edm"}[
        torch.load(path, weights_only=True)["hyper_parameters"]["backbone"]
    ]
    with pytest.raises(CheckpointError, match=f"backbone checkpoint, but backbone={other} was asked for"):
        load_model(path, backbone=other)
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a loadable gaga checkpoint"):
        load_model(tmp_path / "junk.ckpt")
    torch.save({"model": CheckpointError("a pickled object")}, tmp_path / "objects.ckpt")
    with pytest.raises(CheckpointError, match=r"holds Python objects \(gaga.models.checkpoints.CheckpointError\)"):
        load_model(tmp_path / "objects.ckpt")
    checkpoint_dict = torch.load(path, weights_only=True)
    checkpoint_dict["gaga_version"] = "9.0.0"
    torch.save(checkpoint_dict, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="major versions differ"):
        load_model(tmp_path / "future.ckpt")


@pytest.mark.parametrize(
    "key, target",
    [
        ("schedule", "subprocess.getoutput"),  # outside gaga: refused before import
        ("net", "gaga.models.build.importlib"),  # a module imported by gaga, not a gaga callable
        ("schedule", "gaga.diffusion.forward.scatter"),  # reached through a gaga module, defined elsewhere
    ],
)
def test_plain_data_checkpoint_naming_outside_code_runs_nothing(checkpoint, tmp_path, key, target):
    """A checkpoint of plain data passes torch.load(weights_only=True); its nested `_target_` entries must not run."""
    path, _ = checkpoint
    attack = torch.load(path, weights_only=True)
    proof = tmp_path / "ran"
    if "getoutput" in target:
        attack["hyper_parameters"][key] = {"_target_": target, "cmd": f"touch {proof}"}
    else:
        attack["hyper_parameters"][key] = {"_target_": target, "name": str(proof)}
    torch.save(attack, tmp_path / "attack.ckpt")
    assert torch.load(tmp_path / "attack.ckpt", weights_only=True)  # plain data: the unpickler lets it through
    with pytest.raises(CheckpointError, match=r"attack\.ckpt: .*refused") as refused:
        load_model(tmp_path / "attack.ckpt")
    assert not proof.exists()
    if "getoutput" in target:
        assert f"{key}._target_ = 'subprocess.getoutput'" in str(refused.value)


def test_sample_py_on_a_text_file_says_so_in_one_line(tmp_path):
    cfg = compose("sample", [f"ckpt={REPO_ROOT / 'README.md'}"], output_dir=str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        run_sampling(cfg)
    message = str(stop.value)
    assert (
        message == f"error: {REPO_ROOT / 'README.md'}: not a loadable gaga checkpoint: not a file written by "
        "torch.save, or a damaged one (train.py writes .ckpt files)"
    )
    assert "weights_only" not in message  # torch's advice to load it unsafely


def test_sample_quality_counts_training_epochs_not_validations(tmp_path):
    """Every 2nd training epoch while validation runs every 3rd: samples after epochs 2 and 4."""
    datamodule, model = tiny_setup()
    quality = SampleQualityCallback(every_n_epochs=2, num_molecules=2, batch_size=2, stride=25)
    trainer = quiet_trainer(
        max_epochs=4,
        limit_train_batches=1,
        limit_val_batches=1,
        check_val_every_n_epoch=3,
        logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=[quality],
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=datamodule)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    assert sorted(int(row["epoch"]) + 1 for row in rows if row.get("sample/num_molecules")) == [2, 4]


@pytest.mark.parametrize("backbone", ["edm", "geoldm"])
def test_wandb_offline_gets_metrics_table_and_molecules(tmp_path, monkeypatch, backbone):
    """A real W&B run in offline mode (no account): the callback's table, 3D views and pictures (grid, 3D renders,
    the chain's GIF and strip) are written to its files."""
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    datamodule, model = tiny_setup(backbone)
    logger = WandbLogger(project="gaga-tests", save_dir=str(tmp_path), offline=True)
    quality = SampleQualityCallback(every_n_epochs=1, num_molecules=3, batch_size=3, stride=25, wandb_molecules=2)
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=logger, callbacks=[quality]
    )
    trainer.fit(model, datamodule=datamodule)
    logger.experiment.finish()
    media = list(tmp_path.glob("wandb/offline-run-*/files/media/**/*"))
    assert any(p.suffix == ".pdb" for p in media) and any("table" in p.name for p in media), media
    for name in ("molecules_png", "molecules_3d_png", "chain_png", "chain_gif"):
        assert any(p.name.startswith(name) for p in media), (name, media)
    assert any(p.suffix == ".gif" for p in media)


@pytest.mark.parametrize("backbone", ["edm", "geoldm", "flow_matching"])
@pytest.mark.parametrize(
    "options, message",
    [
        ({"start": 101}, r"start=101: sampling starts at a step in 1\.\.100"),
        ({"start": 0}, r"start=0: sampling starts at a step in 1\.\.100"),
        ({"start": 50, "stride": 3}, r"stride=3 must be a positive divisor of the start step 50 \(e\.g\. 1, 2, 5"),
    ],
)
def test_sampling_refuses_a_start_or_stride_the_model_cannot_take(backbone, options, message):
    _, model = tiny_setup(backbone)
    if backbone == "flow_matching" and "stride" in options:
        options = {**options, "sampler": "euler"}  # dopri5 (auto) refuses any stride first: it takes its own steps
    with pytest.raises(ValueError, match=message):
        model.sample(torch.tensor([3, 4]), **options)


@pytest.mark.parametrize(
    "backbone, options, message",
    [
        ("edm", {"sampler": "ancestral", "eta": 0.5}, r"eta=0.5: sampler=ancestral does not use it \(only ddim"),
        ("flow_matching", {"sampler": "euler", "eta": 0.5}, r"eta=0.5: sampler=euler does not use it \(only no"),
        ("flow_matching", {"sampler": "adaptive", "stride": 2}, r"stride=2: sampler=adaptive does not use it"),
    ],
)
def test_samplers_refuse_options_they_do_not_use(backbone, options, message):
    _, model = tiny_setup(backbone)
    with pytest.raises(ValueError, match=message):
        model.sample(torch.tensor([3, 4]), **options)


def test_a_network_with_nan_weights_is_an_error_outside_training_never_finite_molecules(checkpoint, tmp_path):
    """EDM's guard zeroes a NaN coordinate output in training; sampling and validation must refuse instead."""
    path, _ = checkpoint
    model = load_model(path)
    with torch.no_grad():
        for parameter in model.ema_net.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(CheckpointError, match=r"model\.ckpt: the network's output is not finite .* while sampling"):
        generate(model, 2, sampler=_grid_sampler(path), stride=10, progress=False)
    broken = torch.load(path, weights_only=True)
    for value in broken["state_dict"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))
    torch.save(broken, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"nan\.ckpt: weights with NaN or infinite values"):
        load_model(tmp_path / "nan.ckpt")

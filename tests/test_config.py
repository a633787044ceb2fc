"""Config tree: every file of every group composes, data configs instantiate, train.py prints the job config."""

import subprocess
import sys

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gaga.config import CONFIG_DIR, DATA_DIR, REPO_ROOT, compose

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONFIG_DIR / group).glob("*.yaml"))]


def test_every_group_has_options():
    expected = {"data", "schedule", "trainer", "logger", "callbacks", "paths", "debug"}
    assert expected <= set(GROUPS)
    assert all(any(g == group for g, _ in OPTIONS) for group in GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(group, option, tmp_path):
    cfg = compose("train", [f"{group}={option}"], output_dir=str(tmp_path))
    OmegaConf.resolve(cfg)
    assert cfg.paths.data_dir == str(DATA_DIR)


def test_data_configs_instantiate(tmp_path):
    qm9 = instantiate(compose("train", ["data=qm9"]).data)
    assert qm9.encoder.symbols == ("H", "C", "N", "O", "F") and qm9.batch_size == 64
    drugs = instantiate(compose("train", ["data=drugs", f"paths.data_dir={tmp_path}"]).data)
    assert drugs.encoder.num_types == 16 and drugs.batch_size == 32
    with pytest.raises(FileNotFoundError, match=r"(?s)geom_drugs_30.npy.*python -m gaga.data build drugs --source"):
        drugs.setup()


def test_train_prints_composed_config():
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "--cfg", "job", "data.batch_size=7"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "batch_size: 7" in out and "_target_: gaga.data.datamodule.MoleculeDataModule" in out


def test_trainer_limits_need_no_plus():
    cfg = compose("train", ["trainer.max_steps=5", "trainer.limit_train_batches=3", "trainer.num_nodes=2"])
    assert (cfg.trainer.max_steps, cfg.trainer.limit_train_batches, cfg.trainer.num_nodes) == (5, 3, 2)


# the released codes' README commands (EDM, GeoLDM; GAGA's QM9 run), transcribed: preset -> {key: value}
PUBLISHED_SETTINGS = {
    "edm_qm9": {"data.batch_size": 64, "trainer.max_epochs": 3000, "backbone.normalizer.include_charges": True},
    "geoldm_qm9": {"data.batch_size": 64, "trainer.max_epochs": 3000, "backbone.normalizer.include_charges": True},
    "equifm_qm9": {"data.batch_size": 64, "backbone.normalizer.include_charges": True},
    "edm_drugs": {"data.batch_size": 64, "trainer.max_epochs": 3000, "backbone.normalizer.include_charges": False},
    "geoldm_drugs": {"data.batch_size": 32, "trainer.max_epochs": 3000, "backbone.latent_nf": 2},
    "edm_gaga_qm9": {"data.batch_size": 256, "trainer.max_epochs": 1650, "backbone.normalizer.include_charges": False},
}


@pytest.mark.parametrize("preset", sorted(PUBLISHED_SETTINGS))
def test_published_presets_train_as_released_in_float32(preset, tmp_path):
    cfg = compose("train", [f"experiment={preset}", "trainer=gpu"], output_dir=str(tmp_path))
    for key, value in PUBLISHED_SETTINGS[preset].items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.trainer.precision == "32-true"
    assert compose("train", ["trainer=ddp"]).trainer.precision == "32-true"

"""Shared pytest fixtures: the real QM9 data and its EDM split, cached outside the checkout.

The first test session on a machine parses qm9pack once (about 10 s) into the user's cache folder ($GAGA_DATA_DIR,
default ~/.cache/gaga, as an installed gaga); later sessions, and every clone, load it from there.
"""

import os
from pathlib import Path

os.environ.setdefault(
    "GAGA_DATA_DIR", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gaga")
)  # before gaga.config is imported: the tests' train.py runs and compose() resolve paths.data_dir to it

import numpy as np
import pytest

from gaga.config import backbone_config
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.elements import QM9_ATOMS
from gaga.data.molecules import MoleculeSet
from gaga.data.qm9 import QM9, edm_split, load_qm9
from gaga.diffusion.schedules import NoiseSchedule
from gaga.models.build import build

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ["GAGA_DATA_DIR"])
EDM_ALPHA_BAR = NoiseSchedule("polynomial_2", 1000, 1e-5).alpha_bar()  # EDM's QM9 schedule, alpha^2 for t = 0..T

# the tests' backbones: conf/backbone/<name>.yaml (gaga.config.backbone_config) with 16 x 1 networks and T = 100
TINY = ["backbone.net.hidden_nf=16", "backbone.net.n_layers=1", "seed=0"]
TINY_STEPS = {
    "edm": ["schedule.timesteps=100"],
    "geoldm": ["schedule.timesteps=100"],
    "flow_matching": ["backbone.schedule.timesteps=100"],
}


def quiet_trainer(**options):
    """A CPU Trainer without progress bar, model summary or sanity validation; `logger` defaults to none."""
    import pytorch_lightning as pl

    settings = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**settings, **options})


def tiny_setup(
    backbone: str = "edm", train: int = 64, batch_size: int = 16, conditioning: tuple[str, ...] = (), **model_options
):
    """(datamodule, model): a tiny backbone (16 x 1 networks, T = 100) on a real QM9 subset; with `conditioning`,
    conditioned on those properties (trained on EDM's second half)."""
    datamodule = MoleculeDataModule(
        QM9(DATA_DIR),
        batch_size=batch_size,
        subset={"train": train, "valid": 32, "test": 8},
        conditioning=conditioning,
        half="second" if conditioning else None,
    )
    config = backbone_config(
        backbone, [*TINY, *TINY_STEPS[backbone], "backbone.ema_decay=0.9", "backbone.optimizer.lr=1e-3"]
    )
    return datamodule, build({**config, "dataset": datamodule.model_description(), **model_options})


def tiny_predictor(datamodule: MoleculeDataModule, hidden_nf: int = 16, n_layers: int = 2, seed: int = 0, **settings):
    """An untrained property predictor (hidden_nf x n_layers, weights from `seed`, a constant learning rate unless
    `settings` say otherwise) of the property the data carries."""
    import torch

    torch.manual_seed(seed)
    dataset = datamodule.model_description()
    net = {"_target_": "gaga.nn.property_egnn.PropertyEGNN", "hidden_nf": hidden_nf, "n_layers": n_layers}
    return build(
        {
            "_target_": "gaga.models.property_predictor.PropertyPredictor",
            "net": net,
            "dataset": dataset,
            "lr_schedule": "constant",
            **settings,
        }
    )


@pytest.fixture(scope="session")
def qm9() -> MoleculeSet:
    """All 130,831 QM9 molecules (with hydrogens), sorted by QM9 index."""
    return load_qm9(DATA_DIR)


@pytest.fixture(scope="session")
def qm9_train(qm9) -> MoleculeSet:
    """EDM's 100,000-molecule training split (seed 0)."""
    return qm9.subset(edm_split(len(qm9))["train"])


@pytest.fixture(scope="session")
def qm9_sample(qm9_train) -> MoleculeSet:
    """3,000 random training molecules (fixed seed): enough for statistics within 0.5 %."""
    return qm9_train.subset(np.random.default_rng(0).choice(len(qm9_train), 3000, replace=False))


@pytest.fixture(scope="session")
def sample_blocks(qm9_sample):
    """GAGA's (blocks, offsets) of `qm9_sample`: zero-CoM coordinates, zero-meaned one-hot / 4."""
    from gaga.gaussianity import molecule_blocks

    return molecule_blocks(qm9_sample, QM9_ATOMS)

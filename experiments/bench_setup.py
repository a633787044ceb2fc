"""Shared by the benchmarks and experiments: command-line options for the backbone and network size, the model on
QM9's statistics, QM9's training blocks, and CSV output.

Scripts in experiments/ import it directly (`python experiments/bench_*.py` puts this folder on the path). Backbone
settings come from conf/ (gaga.config.backbone_config: Hydra's compose, pure Python, in the wheels the GPU machine
installs).
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import torch

from gaga import config as gaga_config
from gaga.config import DATA_DIR
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.elements import QM9_ATOMS
from gaga.data.qm9 import QM9, edm_split, load_qm9
from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import molecule_blocks
from gaga.models.base import DiffusionBackbone
from gaga.models.build import build


def qm9_training_blocks(data_dir) -> tuple[dict, np.ndarray, np.ndarray, int]:
    """GAGA's (blocks, offsets) of EDM's full QM9 training split, EDM's alpha_bar (polynomial_2, 1e-5, T = 1000) and
    the number of molecules: what the T* benchmarks and experiments evaluate."""
    qm9 = load_qm9(data_dir)
    train = qm9.subset(edm_split(len(qm9))["train"])
    blocks, offsets = molecule_blocks(train, QM9_ATOMS)
    return blocks, offsets, NoiseSchedule("polynomial_2", 1000, 1e-5).alpha_bar(), len(train)


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """--backbone, --hidden / --layers (the published QM9 network by default) and --device."""
    parser.add_argument("--backbone", choices=["edm", "geoldm", "flow_matching"], default="edm")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def qm9_datamodule(batch_size: int = 64) -> MoleculeDataModule:
    return MoleculeDataModule(QM9(DATA_DIR), batch_size=batch_size)


def backbone_config(backbone: str, hidden: int, layers: int) -> dict:
    """conf/backbone/<backbone>.yaml's published QM9 settings (without GAGA) at the given size."""
    return gaga_config.backbone_config(
        backbone, [f"backbone.net.hidden_nf={hidden}", f"backbone.net.n_layers={layers}"]
    )


def qm9_model(datamodule: MoleculeDataModule, backbone: str, hidden: int, layers: int, device) -> DiffusionBackbone:
    """An (untrained) backbone of the given size with QM9's atom types and p(N), on `device`."""
    return build(backbone_config(backbone, hidden, layers), dataset=datamodule.model_description()).to(device)


def describe(model: DiffusionBackbone, device: torch.device) -> str:
    """The device and the model's trainable size, for the first line of a benchmark's output."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.trainable_parameters())
    return f"device: {name}; backbone {model.backbone_name}, {params:,} trainable parameters"


def write_rows(rows: list[dict], path) -> None:
    """A list of same-keyed dicts as a CSV file with a header."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

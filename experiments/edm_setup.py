"""Shared by the benchmarks: command-line options for the network size and the EDM built on QM9's statistics.

Scripts in experiments/ import it directly (`python experiments/bench_*.py` puts this folder on the path).
"""

from __future__ import annotations

import argparse

import torch

from gaga.config import REPO_ROOT
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.qm9 import QM9
from gaga.models.edm import EDM


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """--hidden / --layers (EDM's published QM9 network by default) and --device."""
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def qm9_datamodule(batch_size: int = 64) -> MoleculeDataModule:
    return MoleculeDataModule(QM9(REPO_ROOT / "data"), batch_size=batch_size)


def qm9_edm(datamodule: MoleculeDataModule, hidden: int, layers: int, device: torch.device) -> EDM:
    """An (untrained) EDM of the given size with QM9's atom types and p(N), on `device`."""
    stats = datamodule.statistics
    return EDM(
        net={"_target_": "gaga.nn.EGNNDynamics", "hidden_nf": hidden, "n_layers": layers},
        schedule={"_target_": "gaga.diffusion.schedules.NoiseSchedule"},
        dataset={"name": "qm9", "atom_symbols": stats.atom_symbols, "num_atoms_hist": stats.num_atoms_hist},
    ).to(device)

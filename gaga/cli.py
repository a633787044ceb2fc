"""Hydra entry points behind train.py / gaga-train and sample.py / gaga-sample.

Each is a short orchestrator: compose the config, instantiate the parts, run them.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig

from gaga.config import CONFIG_DIR

log = logging.getLogger("gaga")


def run_training(cfg: DictConfig) -> dict:
    """Instantiate the data module from `cfg`, print its summary, and return the stage timings."""
    from hydra.utils import instantiate

    from gaga.data.summary import data_summary

    start = time.perf_counter()
    datamodule = instantiate(cfg.data)
    print(data_summary(datamodule))
    return {"data": time.perf_counter() - start}


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> None:
    run_training(cfg)

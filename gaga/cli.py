"""Hydra entry points behind train.py / gaga-train and sample.py / gaga-sample.

Each is a short orchestrator: compose the config, instantiate the parts, run them.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig, OmegaConf

from gaga.config import CONFIG_DIR

log = logging.getLogger("gaga")


def _instantiate_all(group: DictConfig | None) -> list:
    from hydra.utils import instantiate

    return [instantiate(item) for item in (group or {}).values() if item is not None and "_target_" in item]


def build_model(cfg: DictConfig, datamodule):
    """The LightningModule of `cfg.backbone`, told the data's atom types and p(N)."""
    from gaga.models.build import build

    stats = datamodule.statistics
    dataset = {"name": stats.dataset, "atom_symbols": stats.atom_symbols, "num_atoms_hist": stats.num_atoms_hist}
    return build(OmegaConf.to_container(cfg.backbone, resolve=True), dataset=dataset)


def run_training(cfg: DictConfig) -> dict:
    """Fit the configured model on the configured data; return the final metrics and the best checkpoint."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from gaga.data.summary import data_summary

    pl.seed_everything(cfg.seed, workers=True)
    start = time.perf_counter()
    datamodule = instantiate(cfg.data)
    try:
        print(data_summary(datamodule))
    except (FileNotFoundError, ValueError) as error:  # missing or bad data: the message says what to do
        raise SystemExit(f"error: {error}") from None
    model = build_model(cfg, datamodule)
    callbacks = _instantiate_all(cfg.get("callbacks")) + _instantiate_all(cfg.get("gaga"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=_instantiate_all(cfg.get("logger")) or False)
    log.info("set-up took %.1f s", time.perf_counter() - start)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    print("final: " + "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
    if best:
        print(f"best checkpoint: {best}")
    return {"metrics": metrics, "best_checkpoint": best}


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> float | None:
    """Returns the monitored metric so Hydra sweepers (Optuna, etc.) can optimise it."""
    result = run_training(cfg)
    return result["metrics"].get("val/nll")

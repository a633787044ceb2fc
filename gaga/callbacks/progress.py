"""Training progress: Lightning's live bar on a terminal, one line per epoch when output goes to a file or a pipe.

A redrawn bar written to a log file is a wall of carriage returns; `progress_bar` picks the line-per-epoch
`EpochLines` whenever standard output is not a terminal.
"""

from __future__ import annotations

import logging
import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

from gaga.console import say

log = logging.getLogger("gaga")


class EpochLines(ProgressBar):
    """After each training epoch (and its validation): `epoch 4/10  train/loss 0.1521  val/nll 411  (44.7 s)`; val/
    values only on epochs that validated (Lightning keeps the last ones, which would repeat)."""

    def __init__(self):
        super().__init__()
        self.enabled = True
        self._clock = time.perf_counter()
        self._validated_epoch = -1  # the last epoch whose validation ran: other epochs print no val/ values

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        validated = self._validated_epoch == trainer.current_epoch
        metrics = {
            k: v
            for k, v in self.get_metrics(trainer, pl_module).items()
            if k != "v_num" and (validated or not k.startswith("val/"))
        }
        values = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        total = "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"
        seconds = time.perf_counter() - self._clock
        say(log, f"epoch {trainer.current_epoch + 1}{total}  {values}  ({seconds:.1f} s)")


def progress_bar(refresh_rate: int = 10) -> ProgressBar:
    """TQDMProgressBar on a terminal, else EpochLines."""
    return TQDMProgressBar(refresh_rate=refresh_rate) if sys.stdout.isatty() else EpochLines()

"""Checkpoints written whole and checked on load: a Lightning CheckpointIO and the callback that installs it.

Each checkpoint is written to a temporary file and renamed (a SIGKILL or a full disk mid-write leaves the previous
file, and no partial `last.ckpt`), with its size and SHA-256 recorded beside it (`<name>.ckpt.sha256`); resuming
refuses a file that no longer matches, with a message naming it, before any state is restored. SIGTERM (a cluster
pre-emption) and SIGINT (Ctrl+C) stop training after the current step with `last.ckpt` written at that step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from gaga.atomic_files import atomic_open, digest_path, verify_digest, write_digest

log = logging.getLogger("gaga")


class DigestCheckpointIO(TorchCheckpointIO):
    """torch.save through a temporary file and a rename, plus a digest file; loads verify the digest first."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_open(path, binary=True) as stream:
            self.write(checkpoint, stream)
        write_digest(path)

    @staticmethod
    def write(checkpoint: dict, stream) -> None:
        """Serialise `checkpoint` into the open temporary file (one method, which fault tests interrupt)."""
        torch.save(checkpoint, stream)

    def load_checkpoint(self, path, *args, **kwargs) -> dict:
        """The checkpoint, after its digest is checked (DigestError naming the file when it fails)."""
        verify_digest(path)
        return super().load_checkpoint(path, *args, **kwargs)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        digest_path(path).unlink(missing_ok=True)


class CheckpointIntegrity(pl.Callback):
    """Installs DigestCheckpointIO on the trainer's strategy at setup, before any checkpoint is read or written, and
    writes `last.ckpt` when training is stopped by SIGTERM or SIGINT."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        trainer.strategy.checkpoint_io = DigestCheckpointIO()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        callback = trainer.checkpoint_callback
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt) or callback is None or not callback.dirpath:
            return
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        # recorded before saving, as Lightning's own save of `last` does: the resumed run's next `last` then replaces
        # this file instead of being versioned beside it (last-v1.ckpt), which `ckpt_path=auto|last` would not find
        callback.last_model_path = str(path)
        trainer.save_checkpoint(path)
        log.warning("stopped by %s at step %d; wrote %s", type(exception).__name__, trainer.global_step, path)

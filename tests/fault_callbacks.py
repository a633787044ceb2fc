"""Callbacks that train.py loads in fault tests (`+callbacks.faults._target_=tests.fault_callbacks.Faults`): a record
of every training step (read back by `records`), and real signals sent to the run at chosen points (SIGKILL, SIGTERM,
SIGINT or SLURM's requeue signal SIGUSR1 after a step, SIGKILL mid-checkpoint-write)."""

import io
import json
import os
import signal

import pytorch_lightning as pl
import torch

from gaga.callbacks.checkpoint_integrity import DigestCheckpointIO


def records(path) -> tuple[dict, dict[int, float]]:
    """(the record of the restored state at the start, {global step: loss}) of one run's log."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[0], {line["step"]: line["loss"] for line in lines[1:]}


def state_fingerprint(ema_tensors, optimizer_state: dict) -> dict:
    """Sums that change with any EMA weight or Adam moment (compared between runs and with checkpoints)."""
    ema = sum(float(t.double().sum()) for t in ema_tensors)
    moments = sum(float(s["exp_avg"].double().sum()) for s in optimizer_state["state"].values())
    return {"ema": ema, "adam": moments}


class KillMidWrite(DigestCheckpointIO):
    """Writes half of a checkpoint of epoch >= `epoch` into the temporary file, then SIGKILLs the process."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def write(self, checkpoint: dict, stream) -> None:
        if checkpoint["epoch"] < self.epoch:
            return super().write(checkpoint, stream)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        stream.write(buffer.getvalue()[: buffer.tell() // 2])
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class Faults(pl.Callback):
    """Appends {step, loss} per training step (and the restored state at the start) to `log` as JSON lines; sends
    `signal_name` to its own process after step `at_step`, or SIGKILLs it mid-write of epoch `kill_in_write_at_epoch`'s
    checkpoint."""

    def __init__(self, log: str, signal_name: str | None = None, at_step: int = -1, kill_in_write_at_epoch: int = -1):
        self.record_path, self.signal_name, self.at_step = log, signal_name, at_step
        self.kill_epoch = kill_in_write_at_epoch

    def _record(self, **entry) -> None:
        with open(self.record_path, "a") as stream:
            stream.write(json.dumps(entry) + "\n")

    def setup(self, trainer, pl_module, stage) -> None:
        if self.kill_epoch >= 0:
            trainer.strategy.checkpoint_io = KillMidWrite(self.kill_epoch)

    def on_train_start(self, trainer, pl_module) -> None:
        state = (
            state_fingerprint(pl_module.ema_net.state_dict().values(), trainer.optimizers[0].state_dict())
            if trainer.global_step
            else {}
        )
        self._record(start=trainer.global_step, gaga=pl_module.truncation.record(), **state)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(step=trainer.global_step, loss=float(outputs["loss"]))
        if trainer.global_step == self.at_step and self.signal_name:
            os.kill(os.getpid(), getattr(signal, self.signal_name))

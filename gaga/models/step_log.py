"""What a training step logs besides its loss: the other training terms and the step rate, read to the host only
at Lightning's logging steps and each epoch's last step (where Lightning reads logged values anyway)."""

from __future__ import annotations

import time

import torch


class StepLog:
    """Each other term's latest value in the epoch, kept on the device, and the steps per second since the last
    logged rate; `after_step` logs them through the module's `log` when Lightning reads logs."""

    def __init__(self):
        self.latest: dict[str, torch.Tensor] = {}
        self.clock = (time.perf_counter(), 0)  # (time, global step) of the last logged step rate

    def start(self, global_step: int) -> None:
        self.clock = (time.perf_counter(), global_step)

    def after_step(self, module, terms: dict[str, torch.Tensor], batch_idx: int, num_graphs: int) -> None:
        self.keep_latest(terms, batch_idx)
        if reads_logs(module, batch_idx):
            self.log_details(module, num_graphs)

    def keep_latest(self, terms: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Each other term's latest value in this epoch, on the device: its mean over the molecules it covers, or,
        when it covers none in this step, its value from the last step that had some (what Lightning logs for a
        value last logged a few steps before)."""
        if batch_idx == 0:
            self.latest = {}
        for name, value in terms.items():
            if name != "loss":
                mean, previous = value.detach().nanmean(), self.latest.get(name)
                self.latest[name] = mean if previous is None else torch.where(mean.isnan(), previous, mean)

    def log_details(self, module, num_graphs: int) -> None:
        """The other terms' latest values (left out while a term has covered no molecule in this epoch) and the
        training steps per second since the last logged rate."""
        for name, value in self.latest.items():
            if bool(torch.isfinite(value)):
                module.log(f"train/{name}", value, batch_size=num_graphs)
        now, steps = time.perf_counter(), module.global_step + 1 - self.clock[1]
        if steps > 0:
            module.log("train/steps_per_s", steps / max(now - self.clock[0], 1e-9))
        self.clock = (now, module.global_step + 1)


def reads_logs(module, batch_idx: int) -> bool:
    """Whether Lightning reads the logged values to the host after this step: its logging steps and each epoch's
    last step (whose values `callback_metrics` keeps). Without a trainer nothing is logged."""
    trainer = module._trainer
    if trainer is None:
        return False
    logging_step = (module.global_step + 1) % trainer.log_every_n_steps == 0
    return logging_step or batch_idx + 1 == trainer.num_training_batches or bool(trainer.fast_dev_run)

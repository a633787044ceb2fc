"""Faults on real training runs (train.py's Hydra entry point in forked child processes, so that each run skips the
imports; tiny EDM and GeoLDM networks, 64 QM9 molecules, GAGA on): SIGKILL while a checkpoint is written, SIGKILL
mid-epoch, SIGTERM, SIGINT; each resume with `ckpt_path=last` continues the same loss curve from the same state. A
run stopped mid-epoch (SIGTERM after the second of an epoch's four batches) resumes with that epoch's third batch:
its losses equal the uninterrupted run's at every step to the end of the epoch."""

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from gaga import cli
from gaga.atomic_files import verify_digest
from tests.fault_callbacks import state_fingerprint

RUN = [
    "experiment=quickstart",
    "backbone.net.hidden_nf=8",
    "backbone.net.n_layers=1",
    "data.subset.train=64",
    "data.subset.valid=16",
    "data.batch_size=16",
    "trainer.max_epochs=3",
    "trainer.limit_val_batches=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=1",
    "~callbacks.sample_quality",
    "gaga.cache_dir=null",
    "gaga.t_star=50",  # fixed (the evaluator's cost is not what is tested); v_hat is still measured
    "gaga.out_dir=null",
    "logger=csv",
    "+callbacks.faults._target_=tests.fault_callbacks.Faults",
]


def train_forked(*overrides: str) -> tuple[int, str]:
    """(exit status, negative for a signal; the SystemExit message) of `python train.py OVERRIDES` run in a fork."""
    message = tempfile.NamedTemporaryFile(suffix=".txt", delete=False).name
    pid = os.fork()
    if pid == 0:  # the child: train.py's entry point, then exit without ever returning into pytest
        code = "crashed"
        try:
            torch.set_num_threads(1)  # the parent's OpenMP threads do not exist here: a pool would deadlock (libgomp)
            sys.argv = ["train.py", *overrides]
            cli.train()
            code = 0
        except SystemExit as stop:
            code = stop.code
        finally:
            Path(message).write_text(str(code))
            os._exit(0 if code in (0, None) else 1)
    status = os.waitpid(pid, 0)[1]
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return code, Path(message).read_text()


def records(path) -> tuple[dict, dict[int, float]]:
    """(the record of the restored state at the start, {global step: loss}) of one run's log."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[0], {line["step"]: line["loss"] for line in lines[1:]}


def checkpoint_state(path) -> dict:
    """Global step, GAGA's T* and v_hat, and the EMA / Adam fingerprint stored in a checkpoint."""
    checkpoint = torch.load(path, weights_only=True)
    ema = [value for key, value in checkpoint["state_dict"].items() if key.startswith("ema_net.")]
    return {
        "step": checkpoint["global_step"],
        "gaga": checkpoint["hyper_parameters"]["gaga"],
        **state_fingerprint(ema, checkpoint["optimizer_states"][0]),
    }


def loader_position(path) -> dict:
    """The training loader's position that Lightning's fit loop stored in a checkpoint (ResumableLoader.state_dict)."""
    [position] = torch.load(path, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    return position


@pytest.mark.faults
@pytest.mark.parametrize("backbone", ["edm", "geoldm"])
def test_killed_and_terminated_runs_resume_with_nothing_lost(tmp_path, backbone):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    common = [*RUN, f"backbone={backbone}", f"hydra.run.dir={run}"]
    fault = "+callbacks.faults"

    code, _ = train_forked(*common, f"{fault}.log={tmp_path}/1.jsonl", f"{fault}.kill_in_write_at_epoch=1")
    assert code == -signal.SIGKILL
    verify_digest(last)  # the previous last.ckpt, whole: the killed write went to a temporary file
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == ["epoch_0000.ckpt", "last.ckpt"]
    assert len(list(last.parent.glob(".*.tmp"))) == 1  # the half-written file, under a name never taken as `last`
    saved = checkpoint_state(last)
    assert saved["step"] == 4 and saved["gaga"]["t_star"] == 50 and saved["gaga"]["v_hat"]["pos"] > 0

    resume = [*common, "ckpt_path=last"]
    code, _ = train_forked(
        *resume, f"{fault}.log={tmp_path}/2.jsonl", f"{fault}.signal_name=SIGKILL", f"{fault}.at_step=12"
    )
    assert code == -signal.SIGKILL  # killed after the last step of epoch 3, before its checkpoint
    start, losses_2 = records(tmp_path / "2.jsonl")
    assert start["start"] == 4 and start["gaga"] == saved["gaga"]
    assert start["ema"] == pytest.approx(saved["ema"], rel=1e-12) and start["adam"] == pytest.approx(saved["adam"])
    _, losses_1 = records(tmp_path / "1.jsonl")
    assert [losses_2[s] for s in range(5, 9)] == [losses_1[s] for s in range(5, 9)]  # epoch 2 replayed exactly
    assert checkpoint_state(last)["step"] == 8

    code, message = train_forked(
        *resume, f"{fault}.log={tmp_path}/3.jsonl", f"{fault}.signal_name=SIGTERM", f"{fault}.at_step=10"
    )
    assert code == 1 and "stopped by SIGTERM at step 10" in message, message
    start, losses_3 = records(tmp_path / "3.jsonl")
    assert start["start"] == 8 and [losses_3[s] for s in (9, 10)] == [losses_2[s] for s in (9, 10)]  # after the kill
    verify_digest(last)
    assert checkpoint_state(last)["step"] == 10  # SIGTERM wrote a checkpoint at the step it stopped, mid-epoch
    assert loader_position(last) == {"epoch": 2, "batches_done": 2, "num_batches": 4, "bucketing": False}

    code, _ = train_forked(
        *resume, f"{fault}.log={tmp_path}/4.jsonl", f"{fault}.signal_name=SIGINT", f"{fault}.at_step=12"
    )
    start, losses_4 = records(tmp_path / "4.jsonl")
    assert code == 1 and start["start"] == 10  # Ctrl+C: Lightning's graceful stop
    assert [losses_4[s] for s in (11, 12)] == [losses_2[s] for s in (11, 12)]  # the rest of epoch 3, its own batches
    verify_digest(last)
    assert checkpoint_state(last)["step"] == 12

"""Faults on real training runs (train.py's Hydra entry point in forked child processes, so that each run skips the
imports; tiny EDM and GeoLDM networks, 64 QM9 molecules, GAGA on): SIGKILL while a checkpoint is written, SIGKILL
mid-epoch, SIGTERM, SIGINT; each resume with `ckpt_path=last` continues the same loss curve from the same state. A
run stopped mid-epoch (SIGTERM after the second of an epoch's four batches) resumes with that epoch's third batch:
its losses equal the uninterrupted run's at every step to the end of the epoch."""

import signal

import pytest
import torch

from gaga.atomic_files import verify_digest
from tests.fault_callbacks import records, state_fingerprint
from tests.train_runs import FAULT_RUN, train_forked


def checkpoint_state(path) -> dict:
    """Global step, GAGA's T* and v_hat, and the EMA / Adam fingerprint stored in a checkpoint."""
    checkpoint = torch.load(path, weights_only=True)
    ema = [value for key, value in checkpoint["state_dict"].items() if key.startswith("ema_net.")]
    return {
        "step": checkpoint["global_step"],
        "gaga": checkpoint["truncation"],
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
    common = [*FAULT_RUN, f"backbone={backbone}", f"hydra.run.dir={run}"]
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


@pytest.mark.faults
def test_a_run_terminated_before_its_first_checkpoint_resumes_into_last_ckpt(tmp_path):
    """SIGTERM before the first checkpoint writes last.ckpt; the resumed run's checkpoints replace it (none is
    versioned as last-v1.ckpt beside a stale last.ckpt that `ckpt_path=last` would resume from), also when the run
    folder has moved since."""
    run = tmp_path / "run"
    common = [*FAULT_RUN, "backbone=edm"]
    fault = "+callbacks.faults"
    code, message = train_forked(
        *common,
        f"hydra.run.dir={run}",
        "trainer.max_epochs=2",
        f"{fault}.log={tmp_path}/1.jsonl",
        f"{fault}.signal_name=SIGTERM",
        f"{fault}.at_step=2",
    )
    assert code == 1 and "stopped by SIGTERM at step 2" in message, message
    code, _ = train_forked(
        *common, f"hydra.run.dir={run}", "trainer.max_epochs=2", "ckpt_path=last", f"{fault}.log={tmp_path}/2.jsonl"
    )
    assert code == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("last*.ckpt")) == ["last.ckpt"]
    assert checkpoint_state(run / "checkpoints" / "last.ckpt")["step"] == 8

    moved = run.rename(tmp_path / "moved")  # as on a fresh machine: the checkpoint's folder is not the run's folder
    code, message = train_forked(
        *common, f"hydra.run.dir={moved}", "trainer.max_epochs=3", "ckpt_path=last", f"{fault}.log={tmp_path}/3.jsonl"
    )
    assert code == 0, message
    assert sorted(p.name for p in (moved / "checkpoints").glob("last*.ckpt")) == ["last.ckpt"]
    assert checkpoint_state(moved / "checkpoints" / "last.ckpt")["step"] == 12

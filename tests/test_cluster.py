"""Scale-out through Hydra's plugins on tiny data: SLURM's launcher config, a multirun on submitit's local executor,
two Optuna trials, the resume that a requeued job relies on (ckpt_path=auto in the same run folder), and Lightning's
SLURM requeue on its signal (a faked job: there is no SLURM here)."""

import os
import signal

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gaga.atomic_files import verify_digest
from gaga.cli import run_training
from gaga.config import CONFIG_DIR
from gaga.config import compose as compose_run
from tests.fault_callbacks import records
from tests.train_runs import FAULT_RUN, TINY, TINY_FIT, train_forked, train_py


def test_slurm_launcher_takes_gpus_and_nodes_from_the_trainer():
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)  # a task per GPU
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] > 0  # requeued when pre-empted
    assert instantiate(cfg.hydra.launcher).params["nodes"] == 2


def test_multirun_on_submitit_local_executor(tmp_path):
    train_py(
        *TINY, "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}", "gaga.eps_ds=0.03,0.05", multirun=True
    )
    assert sorted(p.parent.parent.name for p in tmp_path.glob("*/gaussianity/tstar.json")) == ["0", "1"]
    assert len(list(tmp_path.glob(".submitit/*/*_result.pkl"))) == 2  # each job ran under submitit


def test_optuna_runs_two_trials_on_the_returned_metric(tmp_path):
    train_py(*TINY, "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}")
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and isinstance(results["best_value"], float)  # val/nll of the best trial
    # T*-moving settings are not searched: an NLL bound at another T* is not comparable
    assert set(results["best_params"]) == {"backbone.optimizer.lr", "backbone.ema_decay"}
    assert sorted(p.name for p in tmp_path.glob("[0-9]*")) == ["0", "1"]


def test_requeued_run_continues_from_its_folders_last_checkpoint(tmp_path):
    first = run_training(compose_run("train", [*TINY_FIT, "logger=csv"], output_dir=str(tmp_path)))
    steps = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    again = compose_run("train", [*TINY_FIT, "logger=csv", "trainer.max_epochs=2"], output_dir=str(tmp_path))
    run_training(again)
    assert steps == 2 and torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    assert first["best_checkpoint"]


@pytest.mark.faults
def test_slurm_requeue_signal_writes_the_hpc_checkpoint_requeues_and_the_job_resumes_there(tmp_path):
    """Lightning's real SLURM plugin (SLURMEnvironment, auto_requeue) in a job faked by the SLURM_* variables sbatch
    sets; only `scontrol` is a stand-in, a script on PATH that records its arguments and ends the job with SIGKILL as a
    requeue does (no SLURM on this machine). SIGUSR1, the requeue signal, after step 6 (mid-epoch, with an older
    last.ckpt of step 4 beside it): the hpc checkpoint is written whole, `scontrol requeue <job id>` is called, and the
    requeued job, the same command again, resumes from the hpc checkpoint at step 6."""
    calls = tmp_path / "scontrol_calls.txt"
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nkill -KILL $PPID\n')
    scontrol.chmod(0o755)
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "gaga", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
    env = {**job, "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "PATH": f"{scontrol.parent}:{os.environ['PATH']}"}
    run = tmp_path / "run"
    command = [*FAULT_RUN, "trainer.max_epochs=2", f"hydra.run.dir={run}"]

    faults = "+callbacks.faults"
    code, _ = train_forked(
        *command, f"{faults}.log={tmp_path}/1.jsonl", f"{faults}.signal_name=SIGUSR1", f"{faults}.at_step=6", env=env
    )
    assert code == -signal.SIGKILL and calls.read_text() == "requeue 4242\n"
    hpc = run / "hpc_ckpt_1.ckpt"
    verify_digest(hpc, required=True)  # through gaga's checkpoint IO: written whole, with its digest
    assert torch.load(hpc, weights_only=True)["global_step"] == 6
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4

    code, _ = train_forked(*command, f"{faults}.log={tmp_path}/2.jsonl", env=env)
    assert code == 0 and records(tmp_path / "2.jsonl")[0]["start"] == 6

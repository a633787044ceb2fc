"""Scale-out through Hydra's plugins on tiny data: SLURM's launcher config, a multirun on submitit's local executor,
two Optuna trials, and the resume that a requeued job relies on (ckpt_path=auto in the same run folder)."""

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gaga.cli import run_training
from gaga.config import CONFIG_DIR
from gaga.config import compose as compose_run
from tests.train_runs import TINY, TINY_FIT, train_py


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
    assert set(results["best_params"]) == {"backbone.optimizer.lr", "backbone.ema_decay", "gaga.eps_ds"}
    assert sorted(p.name for p in tmp_path.glob("[0-9]*")) == ["0", "1"]


def test_requeued_run_continues_from_its_folders_last_checkpoint(tmp_path):
    first = run_training(compose_run("train", [*TINY_FIT, "logger=csv"], output_dir=str(tmp_path)))
    steps = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    again = compose_run("train", [*TINY_FIT, "logger=csv", "trainer.max_epochs=2"], output_dir=str(tmp_path))
    run_training(again)
    assert steps == 2 and torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    assert first["best_checkpoint"]

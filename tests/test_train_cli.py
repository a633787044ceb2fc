"""train.py as users run it: a Hydra multirun sweep over GAGA's eps (a W&B run per job, grouped by the sweep), and
DDP simulated with two CPU processes."""

import re

from tests.train_runs import TINY, TINY_FIT, train_py, without_wandb_login
from tests.wandb_files import read_run


def test_multirun_sweeps_eps(tmp_path):
    sweep = tmp_path / "multirun/quickstart/day/time"
    env = without_wandb_login(tmp_path)
    train_py(*TINY_FIT, "gaga.eps_ds=0.01,0.05", f"hydra.sweep.dir={sweep}", multirun=True, env=env)
    results = sorted(sweep.glob("*/gaussianity/tstar.json"))
    assert [p.parent.parent.name for p in results] == ["0", "1"]
    t_stars = [int(re.search(r'"t_star": (\d+)', p.read_text()).group(1)) for p in results]
    assert t_stars[0] > t_stars[1]  # a stricter distance threshold is met later on the trajectory
    runs = [read_run(sweep / job / "wandb") for job in ("0", "1")]
    assert [run.name.rsplit(",", 1)[-1] for run in runs] == ["gaga.eps_ds=0.01", "gaga.eps_ds=0.05"]
    assert {run.group for run in runs} == {"quickstart/day/time"}  # one W&B run per job, grouped by the sweep


def test_ddp_on_two_cpu_processes_agrees_on_t_star(tmp_path):
    out = train_py(*TINY, "trainer=ddp_cpu", f"paths.log_dir={tmp_path}").stdout
    lines = re.findall(r"GAGA: T\* = (\d+) of T = 1000", out)
    assert len(lines) == 2 and lines[0] == lines[1], out[-2000:]

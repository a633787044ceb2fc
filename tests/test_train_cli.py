"""train.py as users run it: a Hydra multirun sweep over GAGA's eps, and DDP simulated with two CPU processes."""

import re
import subprocess
import sys

from gaga.config import REPO_ROOT

TINY = [
    "experiment=quickstart",
    "debug=fast_dev_run",
    "backbone.net.hidden_nf=8",
    "backbone.net.n_layers=1",
    "data.subset.train=256",
    "~callbacks.sample_quality",
]


def train_py(*overrides: str, multirun: bool = False) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *(["-m"] if multirun else []), *TINY, *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_multirun_sweeps_eps(tmp_path):
    train_py("gaga.eps_ds=0.01,0.05", f"hydra.sweep.dir={tmp_path}", "gaga.cache_dir=null", multirun=True)
    results = sorted(tmp_path.glob("*/gaussianity/tstar.json"))
    assert [p.parent.parent.name for p in results] == ["0", "1"]
    t_stars = [int(re.search(r'"t_star": (\d+)', p.read_text()).group(1)) for p in results]
    assert t_stars[0] > t_stars[1]  # a stricter distance threshold is met later on the trajectory


def test_ddp_on_two_cpu_processes_agrees_on_t_star(tmp_path):
    out = train_py("trainer=ddp_cpu", f"paths.log_dir={tmp_path}")
    lines = re.findall(r"GAGA: T\* = (\d+) of T = 1000", out)
    assert len(lines) == 2 and lines[0] == lines[1], out[-2000:]

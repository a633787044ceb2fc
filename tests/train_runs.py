"""train.py as a user runs it, on tiny networks and real QM9 subsets: the overrides and a subprocess runner.

TINY checks the wiring in one batch (fast_dev_run: no logger, no checkpoint); TINY_FIT trains one short epoch
with checkpoints and loggers on.
"""

import os
import subprocess
import sys

from gaga.config import REPO_ROOT

NETWORK = ["experiment=quickstart", "backbone.net.hidden_nf=8", "backbone.net.n_layers=1", "data.subset.train=256"]
TINY = [*NETWORK, "debug=fast_dev_run", "~callbacks.sample_quality"]
TINY_FIT = [
    *NETWORK,
    "data.subset.valid=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.check_val_every_n_epoch=1",
    "~callbacks.sample_quality",
    "gaga.cache_dir=null",
]


def without_wandb_login(folder) -> dict:
    """The environment of a machine where nobody ran `wandb login` (W&B then logs offline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "NETRC": str(folder / "no-netrc"), "WANDB_CONFIG_DIR": str(folder / "wandb-config")}


def train_py(
    *overrides: str, multirun: bool = False, script: str = "train.py", check: bool = True, **run
) -> subprocess.CompletedProcess:
    """Run a script of the checkout (or `-m module`) with these overrides; with `check`, fail with its output."""
    command = [sys.executable, *(script.split() if script.startswith("-m ") else [str(REPO_ROOT / script)])]
    done = subprocess.run(
        [*command, *(["-m"] if multirun else []), *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        **{"cwd": REPO_ROOT, **run},
    )
    assert done.returncode == 0 or not check, done.stdout[-2000:] + done.stderr[-3000:]
    return done

"""train.py as a user runs it, on tiny networks and real QM9 subsets: the overrides and a subprocess runner.

TINY checks the wiring in one batch (fast_dev_run: no logger, no checkpoint); TINY_FIT trains one short epoch
with checkpoints and loggers on. FAULT_RUN and `train_forked` (train.py's entry point in a forked child) are the
fault and signal tests' runs.
"""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

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

# fault and signal runs: a tiny network, 64 molecules in 4 batches an epoch, GAGA on, steps logged (Faults)
FAULT_RUN = [
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


def train_forked(*overrides: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """(exit status, negative for a signal; the SystemExit message) of `python train.py OVERRIDES` run in a fork (with
    `env` added to its environment): the imports are done once, in pytest, and signals reach only the run."""
    import torch

    from gaga import cli

    message = tempfile.NamedTemporaryFile(suffix=".txt", delete=False).name
    pid = os.fork()
    if pid == 0:  # the child: train.py's entry point, then exit without ever returning into pytest
        code = "crashed"
        try:
            os.environ.update(env or {})
            torch.set_num_threads(1)  # the parent's OpenMP threads do not exist here: a pool would deadlock (libgomp)
            # Ctrl+C as in a terminal: pytest started in the background by a shell without job control inherits SIGINT
            # ignored, and so would the run
            signal.signal(signal.SIGINT, signal.default_int_handler)
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

"""What a run prints: one line per event, no third-party noise, progress bars only on a terminal.

`say` sends a line through logging where a handler shows it (Hydra's console and log file), else prints it
(spawned DDP workers, plain scripts), so each event appears once. `quiet_third_party` drops Lightning's tips and
its accelerator lines that do not apply, and the deprecation warnings of the libraries underneath.
"""

from __future__ import annotations

import logging
import sys
import warnings

LIGHTNING_NOISE = ("💡 Tip", "TPU available", "HPU available", "LitLogger")


def say(logger: logging.Logger, message: str) -> None:
    """One line, once: logged when the logger reaches a handler at INFO, printed otherwise."""
    if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        logger.info(message)
    else:
        print(message, flush=True)


def interactive() -> bool:
    """Whether progress bars may redraw themselves: standard error (where tqdm writes) is a terminal."""
    return sys.stderr.isatty()


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(marker in record.getMessage() for marker in LIGHTNING_NOISE)


def quiet_third_party() -> None:
    """Drop Lightning's tips and TPU/HPU lines and the deprecation warnings of torch, Lightning and W&B."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        noise = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningNoise) for f in noise.filters):
            noise.addFilter(_DropLightningNoise())
    for module in ("pytorch_lightning", "lightning_fabric", "lightning", "torch", "wandb", "torch_geometric"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)

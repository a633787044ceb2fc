"""Hydra/OmegaConf glue: the config folder, where outputs and data caches go, and composition for tests and tools.

The configs ship inside the package (gaga/conf, in a checkout a link to the top-level conf/). A checkout keeps
outputs and data under itself; an installed package writes outputs under the working directory and data caches
under the user's cache folder. Importing this module registers the resolvers, so configs resolve the same from
train.py, gaga-train, tests or notebooks.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(__file__).resolve().parent / "conf"
IS_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "conf").is_dir()
USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gaga"
# data caches (QM9, statistics, T*, references): $GAGA_DATA_DIR when set (the tests set it), else the checkout's data/,
# else the user's cache folder
DATA_DIR = (
    Path(os.environ["GAGA_DATA_DIR"])
    if os.environ.get("GAGA_DATA_DIR")
    else (REPO_ROOT / "data" if IS_CHECKOUT else USER_CACHE)
)


def root_dir() -> str:
    """Where outputs/ and multirun/ go: the checkout, or the working directory for an installed package."""
    return str(REPO_ROOT if IS_CHECKOUT else Path.cwd())


if not OmegaConf.has_resolver("gaga_root"):
    OmegaConf.register_new_resolver("gaga_root", root_dir)
if not OmegaConf.has_resolver("gaga_data"):
    OmegaConf.register_new_resolver("gaga_data", lambda: str(DATA_DIR))
# gaga.features=centred|kept -> backbone.zero_mean_features (one setting decides both)
if not OmegaConf.has_resolver("gaga_centres_features"):
    OmegaConf.register_new_resolver("gaga_centres_features", lambda features: features == "centred")


def compose(
    config_name: str = "train", overrides: list[str] | None = None, output_dir: str | None = None
) -> DictConfig:
    """The config as train.py / sample.py would see it, outside a Hydra run (tests, notebooks).

    `hydra:` interpolations resolve against a run whose output folder is `output_dir` (a new temporary one by default).
    """
    import tempfile

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir or tempfile.mkdtemp(prefix="gaga-")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def backbone_config(backbone: str, overrides: Sequence[str] = ()) -> dict:
    """conf/backbone/<backbone>.yaml as train.py composes it without GAGA (`gaga=off`), with `overrides` (e.g.
    `backbone.net.hidden_nf=16`, `schedule.timesteps=100`), resolved to the plain `_target_` dict that
    gaga.models.build takes: the one source of backbone settings for tests and benchmarks."""
    return copy.deepcopy(_composed_backbone(backbone, tuple(overrides)))


@functools.lru_cache(maxsize=32)
def _composed_backbone(backbone: str, overrides: tuple[str, ...]) -> dict:
    cfg = compose("train", [f"backbone={backbone}", "gaga=off", *overrides])
    return OmegaConf.to_container(cfg.backbone, resolve=True)

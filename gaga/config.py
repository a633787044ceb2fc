"""Hydra/OmegaConf glue: the config folder, the `gaga_root` resolver and composition for tests and tools.

Importing this module registers the resolver, so configs resolve the same from train.py, tests or notebooks.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "conf"

if not OmegaConf.has_resolver("gaga_root"):
    OmegaConf.register_new_resolver("gaga_root", lambda: str(REPO_ROOT))


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

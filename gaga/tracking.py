"""Weights & Biases as the run dashboard: offline when no API key is configured, runs named, grouped and tagged.

`wandb_logger` builds Lightning's WandbLogger from conf/logger/wandb.yaml. Names come from the experiment and the
command-line overrides, groups from the Hydra sweep a run belongs to; the GaussianityCallback adds T* as a tag and
T*, T_ID, T_DS and v_hat to the run's summary. W&B is imported only here and only when this logger is chosen.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gaga.console import say

log = logging.getLogger("gaga")

# overrides that say where things go rather than what runs: left out of run names
UNNAMED_OVERRIDE_PREFIXES = (
    "experiment=",
    "hydra.",
    "hydra/",
    "paths.",
    "logger",
    "callbacks.",
    "debug=",
    "ckpt_path=",
)


def _hydra_config():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_name(task_name: str) -> str:
    """`quickstart` or `quickstart:gaga.eps_ds=0.01,trainer.max_epochs=2` (the overrides that change the run)."""
    hydra = _hydra_config()
    overrides = [
        o for o in (hydra.overrides.task if hydra else []) if not o.lstrip("+~").startswith(UNNAMED_OVERRIDE_PREFIXES)
    ]
    return f"{task_name}:{','.join(overrides)}" if overrides else task_name


def sweep_group() -> str | None:
    """The Hydra sweep of a multirun job (`<task>/<date>/<time>` of its sweep folder); None for a single run."""
    from hydra.types import RunMode

    hydra = _hydra_config()
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return None
    return "/".join(Path(hydra.sweep.dir).parts[-3:])


def has_api_key() -> bool:
    """Whether W&B finds credentials (WANDB_API_KEY, a settings file or ~/.netrc), without contacting a server."""
    import wandb

    return bool(wandb.login(prompt=False, verify=False))


def wandb_logger(
    project: str,
    save_dir: str,
    task_name: str,
    offline: str | bool = "auto",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
    **kwargs,
):
    """Lightning's WandbLogger; `offline="auto"` logs offline unless an API key is configured, and says so once.

    name / group None: from the run's overrides / its sweep (see run_name, sweep_group). kwargs go to wandb.init.
    """
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    if offline not in ("auto", True, False):
        raise ValueError(f"logger.wandb.offline must be auto, true or false, got {offline!r}")
    if offline == "auto":
        offline = not has_api_key()
        if offline:
            say(
                log,
                f"W&B: no API key configured, logging offline to {save_dir}/wandb "
                f"(upload later: wandb sync {save_dir}/wandb/offline-run-*)",
            )
    settings = wandb.Settings(mode="offline", silent=True) if offline else wandb.Settings(quiet=True)
    logger = WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=offline,
        name=name or run_name(task_name),
        group=group or sweep_group(),
        tags=[str(tag) for tag in tags],
        settings=settings,
        **kwargs,
    )
    logger._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which W&B warns about on every run
    return logger


def finish(loggers) -> None:
    """End the W&B run a WandbLogger started, so that the next job of a sweep starts its own."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def picture_media(pictures: dict[str, Path], prefix: str) -> dict:
    """W&B images of picture files (gaga.pictures.write_pictures' result) under `<prefix>/pictures/<name>`; a GIF
    stays animated."""
    import wandb

    return {f"{prefix}/pictures/{name.replace('.', '_')}": wandb.Image(str(path)) for name, path in pictures.items()}


def molecule_views(molecules, dataset: str, count: int) -> list:
    """W&B 3D molecule objects of the first `count` molecules, with their generated geometry (not re-embedded)."""
    import wandb

    from gaga.metrics import molecule_from_coordinates

    views = []
    for index in range(min(count, len(molecules))):
        molecule = molecule_from_coordinates(*molecules.molecule(index), dataset)
        views.append(wandb.Molecule.from_rdkit(molecule, convert_to_3d_and_optimize=False))
    return views


def log_sample_run(output_dir: Path, metrics: dict, pictures: dict[str, Path], molecules, dataset: str, project: str):
    """One W&B run (job type `sample`, offline without an API key) holding sample.py's metrics as its summary,
    its pictures and 3D views of a few molecules."""
    import wandb

    offline = not has_api_key()
    if offline:
        say(log, f"W&B: no API key configured, logging offline to {output_dir}/wandb (upload later: wandb sync)")
    settings = wandb.Settings(mode="offline", silent=True) if offline else wandb.Settings(quiet=True)
    run = wandb.init(
        project=project, dir=str(output_dir), name=run_name("sample"), job_type="sample", settings=settings
    )
    try:
        run.log({**picture_media(pictures, "sample"), "sample/molecules": molecule_views(molecules, dataset, 4)})
        run.summary.update({f"sample/{key}": value for key, value in metrics.items() if isinstance(value, int | float)})
    finally:
        run.finish()

"""Hydra entry points behind train.py / gaga-train and sample.py / gaga-sample.

Each is a short orchestrator: compose the config, instantiate the parts, run them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from gaga.config import CONFIG_DIR
from gaga.console import interactive, quiet_third_party, say

log = logging.getLogger("gaga")

# what a fully trained model reaches, printed under the sample table for context (the papers' own figures)
PUBLISHED = {
    "qm9": "for context, EDM fully trained on QM9 reaches atom stability 98.7 %, molecule stability 82.0 %, "
    "validity 91.9 %, valid x unique 90.7 % (Hoogeboom et al. 2022; the paper's figures, docs/references.md)",
}


def _instantiate(config, **kwargs):
    """Instantiate a config; a constructor's ValueError or TypeError (a bad setting) ends the run with a one-line
    message naming the target."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):
            raise SystemExit(f"error: {error.__cause__}") from None
        if isinstance(error.__cause__, TypeError):
            target = config.get("_target_", "?") if isinstance(config, DictConfig) else "?"
            raise SystemExit(f"error: bad settings for {target}: {error.__cause__}; check its keys and types") from None
        raise


def _checked(cfg: DictConfig) -> None:
    """Stop with one line naming the setting when `cfg` breaks a rule of gaga.checks (before any work)."""
    from gaga.checks import SettingsError, check_settings

    try:
        check_settings(cfg)
    except SettingsError as error:
        raise SystemExit(f"error: {error}") from None


def _instantiate_all(group: DictConfig | None) -> list:
    return [_instantiate(item) for item in (group or {}).values() if item is not None and "_target_" in item]


def build_model(cfg: DictConfig, datamodule):
    """The LightningModule of `cfg.backbone`, told the data's atom types and p(N) (and, for a conditional model, its
    properties): `MoleculeDataModule.model_description`."""
    from gaga.models.build import build

    return build(OmegaConf.to_container(cfg.backbone, resolve=True), dataset=datamodule.model_description())


def run_training(cfg: DictConfig) -> dict:
    """Fit the configured model on the configured data; return the final metrics and the best checkpoint.

    Callbacks, loggers and trainer are built first, so a bad setting stops the run before any data load.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from gaga import tracking
    from gaga.atomic_files import DigestError
    from gaga.checks import check_split_sizes
    from gaga.data.summary import data_summary
    from gaga.models.checkpoints import CheckpointError, read_checkpoint
    from gaga.models.gradient_guard import NonFiniteLossError
    from gaga.nn.dynamics import NonFiniteOutputError

    _checked(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    start = time.perf_counter()
    callbacks = _instantiate_all(cfg.get("callbacks")) + ([_instantiate(cfg.gaga)] if cfg.get("gaga") else [])
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = _instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    datamodule = _instantiate(cfg.data)
    resume = _resume_path(cfg.get("ckpt_path"), trainer)
    try:
        if resume not in (None, "last", "best", "hpc"):  # a checkpoint of this backbone and data, read safely
            read_checkpoint(resume, cfg.backbone.get("backbone"), datamodule.dataset_name)
        print(data_summary(datamodule))
        check_split_sizes(datamodule.batch_size, {name: len(split) for name, split in datamodule.splits.items()})
    except (FileNotFoundError, ValueError) as error:  # missing or bad data or checkpoint: the message says what to do
        raise SystemExit(f"error: {error}") from None
    try:
        model = build_model(cfg, datamodule)
    except ValueError as error:  # a model setting that cannot work with this data: the message names it
        raise SystemExit(f"error: {error}") from None
    log.info("set-up took %.1f s", time.perf_counter() - start)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    except DigestError as error:  # a damaged checkpoint to resume from (CheckpointIntegrity)
        raise SystemExit(f"error: cannot resume: {error}") from None
    except (NonFiniteLossError, NonFiniteOutputError, CheckpointError) as error:  # diverged: the message says what
        raise SystemExit(f"error: at step {trainer.global_step}: {error}") from None
    except SIGTERMException:
        raise SystemExit(
            f"error: stopped by SIGTERM at step {trainer.global_step} (a pre-emption?); its checkpoint is last.ckpt: "
            "run again in this folder with ckpt_path=auto (or give ckpt_path=PATH)"
        ) from None
    finally:
        tracking.finish(loggers)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    say(log, "final: " + "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
    if best:
        say(log, f"best checkpoint: {best}")
    return {"metrics": metrics, "best_checkpoint": best}


def _resume_path(ckpt_path: str | None, trainer) -> str | None:
    """`auto`: the newer of this run folder's last.ckpt and the checkpoint Lightning writes on SLURM's requeue signal
    (hpc_ckpt_N.ckpt), so a requeued SLURM job continues; else a fresh start."""
    if ckpt_path != "auto":
        return ckpt_path
    callback = trainer.checkpoint_callback
    found = [Path(callback.dirpath) / "last.ckpt"] if callback is not None and callback.dirpath else []
    found = [path for path in [*found, *Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")] if path.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda path: path.stat().st_mtime)
    say(log, f"resuming from {newest}")
    return str(newest)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> float | None:
    """Returns `optimized_metric` (the backbone's validation metric: val/loss for flow matching, val/nll for the
    others) so that Hydra sweepers (Optuna) can optimise it."""
    quiet_third_party()
    result = run_training(cfg)
    return result["metrics"].get(cfg.optimized_metric)


def run_sampling(cfg: DictConfig) -> dict:
    """Generate `cfg.n_samples` molecules, write SDF/XYZ, evaluate them, write metrics.json and the pictures
    (`cfg.pictures`, `cfg.chain`); return the metrics."""
    import json

    import torch

    from gaga.atomic_files import write_text_atomically
    from gaga.io import write_sdf, write_xyz
    from gaga.models.checkpoints import CheckpointError, load_generator
    from gaga.sampling import generate

    _checked(cfg)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_generator(cfg.ckpt, device, backbone=cfg.expect_backbone, dataset=cfg.expect_dataset)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    dataset = model.hparams.dataset["name"]
    try:
        generated = generate(
            model,
            cfg.n_samples,
            cfg.batch_size,
            cfg.sampler,
            cfg.stride,
            cfg.start,
            cfg.eta,
            cfg.seed,
            progress=interactive(),
            chain=cfg.chain,
            chain_frames=cfg.chain_frames,
            condition=OmegaConf.to_container(cfg.condition),
        )
    except ValueError as error:  # start / stride / sampler / condition the model cannot take
        raise SystemExit(f"error: {error}") from None
    out = Path(cfg.paths.output_dir)
    write_sdf(out / "samples.sdf", generated.molecules, dataset=dataset.removesuffix("_noH"))
    write_xyz(out / "samples.xyz", generated.molecules)
    written = [out / "samples.sdf", out / "samples.xyz", out / "metrics.json"]
    if generated.molecules.properties:
        written.append(write_requested_properties(out / "properties.csv", generated.molecules))
    report = {
        "checkpoint": str(cfg.ckpt),
        "sampler": generated.sampler,
        "stride": int(cfg.stride),
        "start_step": generated.start,
        "network_evaluations": generated.num_evaluations,
        "sampling_seconds": generated.seconds,
        "seconds_per_molecule": generated.seconds_per_molecule,
        "molecules_per_second": 1.0 / generated.seconds_per_molecule,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }
    rules = dataset.removesuffix("_noH")
    evaluation, reference = evaluate_generated(generated.molecules, rules, cfg) if cfg.evaluate else (None, None)
    if evaluation is not None:
        report.update(evaluation.metrics)
    write_text_atomically(out / "metrics.json", json.dumps(report, indent=1) + "\n")
    from gaga.metrics import format_table

    print(format_table({k: v for k, v in report.items() if isinstance(v, float | int)}))
    if cfg.evaluate and dataset in PUBLISHED:
        print(PUBLISHED[dataset])
    print(f"wrote {', '.join(str(path) for path in written)}")
    pictures = draw_generated(out, generated, rules, cfg, evaluation, reference)
    if cfg.wandb:
        from gaga.tracking import log_sample_run

        log_sample_run(out, report, pictures, generated.molecules, rules, cfg.wandb_project)
    return report


def write_requested_properties(path: Path, molecules) -> Path:
    """A conditional model's requested property values, one row per molecule (index, atom count, values)."""
    from gaga.atomic_files import write_text_atomically

    names = list(molecules.properties)
    rows = [",".join(["molecule", "num_atoms", *names])]
    for index, size in enumerate(molecules.num_atoms):
        rows.append(",".join([str(index), str(size), *(f"{molecules.properties[n][index]:.6g}" for n in names)]))
    return write_text_atomically(path, "\n".join(rows) + "\n")


def evaluate_generated(molecules, rules: str, cfg: DictConfig):
    """(Evaluation, EvaluationReference): the literature's metrics of generated molecules against the dataset's
    training SMILES and test split, and that reference."""
    from gaga.metrics.evaluation import evaluate
    from gaga.metrics.references import dataset_reference

    reference = dataset_reference(rules, cfg.paths.data_dir, progress=interactive())
    for note in reference.notes:
        log.info(note)
    evaluation = evaluate(
        molecules,
        rules,
        train_smiles=reference.train_smiles,
        reference=reference.geometry,
        strain_molecules=cfg.strain_molecules,
        seed=cfg.seed,
        progress=interactive(),
    )
    return evaluation, reference


def draw_generated(out: Path, generated, rules: str, cfg: DictConfig, evaluation, reference) -> dict[str, Path]:
    """The pictures sample.py writes (see gaga.pictures.write): the grids of the first `cfg.pictures` molecules, the
    chain when one was kept, the distributions when the molecules were evaluated; a failure is one warning."""
    from gaga.pictures.write import write_pictures

    if not cfg.pictures and not generated.chain:
        return {}
    pictures = write_pictures(
        out,
        generated.molecules,
        rules,
        count=cfg.pictures,
        chain=generated.chain,
        geometry=evaluation.geometry if evaluation is not None and cfg.pictures else None,
        reference=reference.geometry if reference is not None else None,
        reference_name=f"{rules} test split",
    )
    if pictures:
        print(f"wrote {', '.join(str(path) for path in pictures.values())}")
    return pictures


@hydra.main(config_path=str(CONFIG_DIR), config_name="sample", version_base="1.3")
def sample(cfg: DictConfig) -> None:
    quiet_third_party()
    run_sampling(cfg)

"""Sample molecules from the EMA weights every k training epochs and log the literature's metrics.

With a W&B logger it also logs a table of the metrics and 3D views of a few generated molecules.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class SampleQualityCallback(pl.Callback):
    """After every `every_n_epochs`-th training epoch: sample `num_molecules`, evaluate, log under `sample/`.

    Counted in training epochs, so the schedule holds whatever the validation cadence. Runs on rank 0 only.
    Novelty and the W1 distances need the dataset's references (training SMILES, test-split geometry), built once
    from the data caches in `data_dir` and reused.
    """

    def __init__(
        self,
        every_n_epochs: int = 20,
        num_molecules: int = 100,
        batch_size: int = 100,
        sampler: str = "auto",
        stride: int = 1,
        data_dir: str | None = None,
        wandb_molecules: int = 4,
    ):
        if every_n_epochs < 1 or num_molecules < 1:
            raise ValueError(f"every_n_epochs and num_molecules must be >= 1, got {every_n_epochs}, {num_molecules}")
        self.every_n_epochs, self.num_molecules, self.batch_size = every_n_epochs, num_molecules, batch_size
        self.sampler, self.stride, self.data_dir = sampler, stride, data_dir
        self.wandb_molecules = wandb_molecules
        self._reference = None

    def _rules(self, pl_module) -> str:
        return pl_module.hparams.dataset["name"].removesuffix("_noH")

    def reference(self, pl_module):
        if self._reference is None and self.data_dir is not None:
            from gaga.metrics.references import dataset_reference

            self._reference = dataset_reference(self._rules(pl_module), self.data_dir, progress=False)
        return self._reference

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        from gaga.metrics import evaluate_molecules
        from gaga.sampling import generate

        training = pl_module.training
        pl_module.eval()
        try:
            generated = generate(
                pl_module,
                self.num_molecules,
                self.batch_size,
                self.sampler,
                self.stride,
                seed=trainer.current_epoch,
                progress=False,
            )
        finally:
            pl_module.train(training)
        reference = self.reference(pl_module)
        metrics = evaluate_molecules(
            generated.molecules,
            self._rules(pl_module),
            progress=False,
            strain_molecules=0,
            train_smiles=reference.train_smiles if reference else None,
            reference=reference.geometry if reference else None,
        )
        metrics["seconds_per_molecule"] = generated.seconds_per_molecule
        flat = {f"sample/{k}": float(v) for k, v in metrics.items() if "." not in k}
        pl_module.log_dict(flat, rank_zero_only=True)
        log.info("epoch %d samples: %s", trainer.current_epoch + 1, {k: round(v, 4) for k, v in flat.items()})
        self._log_to_wandb(trainer, generated.molecules, flat, self._rules(pl_module))

    def _log_to_wandb(self, trainer: pl.Trainer, molecules, metrics: dict[str, float], rules: str) -> None:
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            import wandb

            from gaga.metrics import molecule_from_coordinates

            views = []
            for i in range(min(self.wandb_molecules, len(molecules))):
                z, pos = molecules.molecule(i)
                molecule = molecule_from_coordinates(z, pos, rules)  # the generated geometry, not a re-embedded one
                views.append(wandb.Molecule.from_rdkit(molecule, convert_to_3d_and_optimize=False))
            table = wandb.Table(columns=list(metrics), data=[list(metrics.values())])
            # W&B's own step counts log calls; the trainer's step goes beside it, as Lightning's WandbLogger does
            logger.experiment.log(
                {"sample/table": table, "sample/molecules": views, "trainer/global_step": trainer.global_step}
            )

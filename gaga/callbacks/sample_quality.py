"""Sample molecules from the EMA weights every k training epochs and log the literature's metrics.

With a W&B logger it also logs a table of the metrics, 3D views of a few generated molecules and the pictures
sample.py writes (gaga.pictures: the molecule grids, a denoising chain's GIF and strip, the distributions).
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
        pictures: int = 24,
        chain: int = 2,
    ):
        if every_n_epochs < 1 or num_molecules < 1:
            raise ValueError(f"every_n_epochs and num_molecules must be >= 1, got {every_n_epochs}, {num_molecules}")
        if pictures < 0 or not 0 <= chain <= min(batch_size, num_molecules):
            raise ValueError(
                f"pictures must be >= 0 and chain in 0..{min(batch_size, num_molecules)} (the first batch), "
                f"got {pictures} and {chain}"
            )
        self.every_n_epochs, self.num_molecules, self.batch_size = every_n_epochs, num_molecules, batch_size
        self.sampler, self.stride, self.data_dir = sampler, stride, data_dir
        self.wandb_molecules, self.pictures, self.chain = wandb_molecules, pictures, chain
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
        from gaga.metrics.evaluation import evaluate
        from gaga.sampling import generate

        wandb_loggers = self._wandb_loggers(trainer)
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
                chain=self.chain if wandb_loggers else 0,
            )
        finally:
            pl_module.train(training)
        reference = self.reference(pl_module)
        evaluation = evaluate(
            generated.molecules,
            self._rules(pl_module),
            progress=False,
            strain_molecules=0,
            train_smiles=reference.train_smiles if reference else None,
            reference=reference.geometry if reference else None,
        )
        metrics = {**evaluation.metrics, "seconds_per_molecule": generated.seconds_per_molecule}
        flat = {f"sample/{k}": float(v) for k, v in metrics.items() if "." not in k}
        pl_module.log_dict(flat, rank_zero_only=True)
        log.info("epoch %d samples: %s", trainer.current_epoch + 1, {k: round(v, 4) for k, v in flat.items()})
        for logger in wandb_loggers:
            self._log_to_wandb(trainer, logger, generated, evaluation, reference, flat, self._rules(pl_module))

    @staticmethod
    def _wandb_loggers(trainer: pl.Trainer) -> list:
        from pytorch_lightning.loggers import WandbLogger

        return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]

    def _log_to_wandb(self, trainer, logger, generated, evaluation, reference, metrics: dict, rules: str) -> None:
        """The metrics table, 3D views of the first molecules and the pictures (drawn in a temporary folder that
        W&B copies from; a picture that fails to draw is one warning)."""
        import tempfile

        import wandb

        from gaga.pictures.write import write_pictures
        from gaga.tracking import molecule_views, picture_media

        with tempfile.TemporaryDirectory(prefix="gaga-pictures-") as folder:
            pictures = write_pictures(
                folder,
                generated.molecules,
                rules,
                count=self.pictures,
                chain=generated.chain,
                geometry=evaluation.geometry if self.pictures else None,
                reference=reference.geometry if reference else None,
                reference_name=f"{rules} test split",
            )
            # W&B's own step counts log calls; the trainer's step goes beside it, as Lightning's WandbLogger does
            logger.experiment.log(
                {
                    "sample/table": wandb.Table(columns=list(metrics), data=[list(metrics.values())]),
                    "sample/molecules": molecule_views(generated.molecules, rules, self.wandb_molecules),
                    **picture_media(pictures, "sample"),
                    "trainer/global_step": trainer.global_step,
                }
            )

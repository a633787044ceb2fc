"""EDM's property predictor as a LightningModule: the classifier that scores property-conditional generation.

EDM (Hoogeboom et al. 2022) measures how well a conditional generator hits the property it is asked for with an EGNN
regressor (Satorras et al. 2021) trained on the first half of QM9's training split (`data.half=first`), the
generator having trained on the second. `PropertyPredictor` trains that regressor as EDM's released
`qm9/property_prediction/main_qm9_prop.py` does: an L1 loss on the label normalised with the validation split's mean
and mean absolute deviation (`gaga.data.properties.PropertyNorms`, which `MoleculeDataModule.conditioning_description`
fits), Adam, a cosine learning rate over the run's epochs, and the validation MAE in the property's unit (`val/mae`,
by which checkpoints are ranked). It is built by `gaga.models.build` from plain data and loads back through
`gaga.models.checkpoints.load_model` like the backbones.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.loader import DataLoader

from gaga.data.datamodule import MoleculeDataset
from gaga.data.elements import AtomEncoder
from gaga.data.molecules import MoleculeSet
from gaga.data.properties import PropertyNorms
from gaga.models.build import build
from gaga.models.checkpoints import add_entries

# EDM's main_qm9_prop.py: Adam, lr 1e-3, weight decay 1e-16
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1.0e-3, "weight_decay": 1.0e-16}
LR_SCHEDULES = ("cosine", "constant")


class PropertyPredictor(pl.LightningModule):
    """Predicts one molecular property (the one `data.conditioning` names) from atom types and coordinates.

    Args:
        net: the network's config (`gaga.nn.property_egnn.PropertyEGNN` settings; `num_types` comes from the data).
        dataset: what the data module tells a model (`MoleculeDataModule`'s statistics and its
            `conditioning_description()` under "conditioning"): atom symbols and the property's name, unit and norms.
        optimizer: a `_target_` optimiser config (Adam with EDM's settings by default).
        lr_schedule: "cosine" (EDM's CosineAnnealingLR over `trainer.max_epochs`: epoch e, from 0, trains at
            lr * (1 + cos(pi e / epochs)) / 2) or "constant". EDM's script steps the schedule before each epoch's
            training, one epoch ahead of this (its first epoch at step 1, its last at lr 0, an epoch without
            change); here, as PyTorch and Lightning order it, the schedule steps after each epoch.
        seed: recorded with the run (the predictor draws no noise).
        backbone: the model's name in checkpoints.
        validation_metric: what checkpoints and Optuna rank runs by (only `val/mae`).
    """

    def __init__(
        self,
        net: dict,
        dataset: dict,
        optimizer: dict | None = None,
        lr_schedule: str = "cosine",
        seed: int = 0,
        backbone: str = "property_predictor",
        validation_metric: str = "val/mae",
    ):
        super().__init__()
        self.save_hyperparameters()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"backbone.lr_schedule={lr_schedule!r}: use one of {list(LR_SCHEDULES)}")
        if validation_metric != "val/mae":
            raise ValueError(f"backbone.validation_metric={validation_metric!r}: the property predictor logs val/mae")
        conditioning = dataset.get("conditioning")
        names = conditioning["norms"]["names"] if conditioning else []
        if len(names) != 1:
            raise ValueError(
                f"data.conditioning={list(names)}: the property predictor predicts exactly one property; name one, "
                "e.g. data.conditioning=[alpha]"
            )
        self.property_name = names[0]
        self.unit = conditioning["units"][0]
        self.norms = PropertyNorms.from_record(conditioning["norms"])
        self.encoder = AtomEncoder(dataset["name"], tuple(dataset["atom_symbols"]))
        self.net = build(net, num_types=self.encoder.num_types)

    # --- prediction ---------------------------------------------------------------------------------

    def normalised_prediction(self, batch) -> torch.Tensor:
        """The network's output [B]: the property in normalised units, (value - mean) / MAD."""
        return self.net(batch.x, batch.pos, batch.batch, batch.num_graphs)

    def forward(self, batch) -> torch.Tensor:
        """The predicted property [B] of a PyG batch's molecules, in the property's unit."""
        return self.norms.denormalise(self.normalised_prediction(batch).unsqueeze(1)).squeeze(1)

    @torch.no_grad()
    def predict_molecules(self, molecules: MoleculeSet, batch_size: int = 256) -> np.ndarray:
        """The predicted property of each molecule of `molecules` [M], in the property's unit (evaluation mode);
        ValueError naming an element that is not one of the predictor's atom types."""
        was_training = self.training
        self.eval()
        dataset = MoleculeDataset(molecules, self.encoder.encode(molecules.atomic_numbers), self.encoder.num_types)
        values = [self(batch.to(self.device)).cpu() for batch in DataLoader(dataset, batch_size=batch_size)]
        self.train(was_training)
        return torch.cat(values).double().numpy()

    # --- training and evaluation -------------------------------------------------------------------

    def labels(self, batch) -> torch.Tensor:
        """The batch's values [B] of the predicted property (the only column the data carries), in its unit."""
        return batch.properties[:, 0]

    def l1_loss(self, batch) -> torch.Tensor:
        """EDM's training objective: the mean absolute error in normalised units, (value - mean) / MAD."""
        target = self.norms.normalise(self.labels(batch).unsqueeze(1)).squeeze(1)
        return torch.nn.functional.l1_loss(self.normalised_prediction(batch), target)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.l1_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.num_graphs)
        return loss

    def mean_absolute_error(self, batch) -> torch.Tensor:
        return (self(batch) - self.labels(batch)).abs().mean()

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log("val/mae", self.mean_absolute_error(batch), prog_bar=True, batch_size=batch.num_graphs, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self.log("test/mae", self.mean_absolute_error(batch), batch_size=batch.num_graphs, sync_dist=True)

    def configure_optimizers(self):
        config = {**DEFAULT_OPTIMIZER, **(self.hparams.optimizer or {}), "_partial_": True}
        optimizer = build(config)(self.parameters())
        if self.hparams.lr_schedule == "constant":
            return optimizer
        epochs = self.trainer.max_epochs if self._trainer is not None else None
        if epochs is None or epochs < 1:
            raise ValueError(
                f"backbone.lr_schedule=cosine anneals over trainer.max_epochs, which is {epochs}; set "
                "trainer.max_epochs=N or backbone.lr_schedule=constant"
            )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    # --- checkpoints --------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain-data hyperparameters and gaga's entries (gaga.models.checkpoints), as the backbones write them."""
        add_entries(checkpoint, self)

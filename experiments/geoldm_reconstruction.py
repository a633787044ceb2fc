"""GeoLDM's decoder accuracy: atom types recovered from the latents of held-out QM9 molecules, by a checkpoint.

    python experiments/geoldm_reconstruction.py CKPT [--molecules 2048] [--no-ema]

Encodes validation molecules with the checkpoint's (fixed) encoder, draws the latent as the model trains on it
(mean + sigma_0 noise), decodes, and prints the fraction of atoms whose type is the argmax of the decoder's logits.
"""

from __future__ import annotations

import argparse

import torch

from gaga.config import DATA_DIR
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.sources import source_for
from gaga.models.checkpoints import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--molecules", type=int, default=2048, help="validation molecules (a seeded subset)")
    parser.add_argument("--no-ema", action="store_true", help="use the trained decoder instead of its EMA")
    args = parser.parse_args()
    model = load_model(args.ckpt, backbone="geoldm")
    name = model.hparams.dataset["name"]
    source = source_for(name.removesuffix("_noH"), DATA_DIR)
    datamodule = MoleculeDataModule(
        source, eval_batch_size=256, remove_h=name.endswith("_noH"), subset={"valid": args.molecules}
    )
    decoder = model.averaged("decoder", use_ema=not args.no_ema)
    correct = total = 0
    with torch.no_grad():
        for batch in datamodule.ordered_loader("valid"):
            z_pos, z_h = model.sampled_latents(batch, torch.Generator().manual_seed(0))
            _, logits = decoder(z_pos, z_h, batch.batch)
            types = batch.x.shape[1]
            correct += int((logits[:, :types].argmax(1) == batch.x.argmax(1)).sum())
            total += batch.x.shape[0]
    which = "trained" if args.no_ema else "EMA"
    print(
        f"{which} decoder: atom-type accuracy {correct / total:.4f} on {len(datamodule.splits['valid'])} "
        f"validation molecules ({total} atoms)"
    )


if __name__ == "__main__":
    main()

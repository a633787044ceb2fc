"""How much atom-type information GeoLDM's fixed encoder puts into its latents, by the units it reads.

    python experiments/geoldm_encoder_units.py [--molecules 300] [--seeds 0 1 2 3]

For each seed, the published QM9 encoder (gaga.nn.EquivariantEncoder: 1 EGNN block x 256, latent_nf 1, charges
in the input) at that seed's random initial weights, which the released GeoLDM never trains, encodes the first
`--molecules` validation molecules twice: from raw atoms (`backbone.encoder_inputs=raw`, the released GeoLDM:
angstrom, one-hot 0/1, charge Z) and from EDM-normalised ones (`normalised`: one-hot / 4, Z / 10; gaga before
issue 20). Printed per seed and units: the standard deviation of the latent feature z_h over all atoms, and the
fraction of atoms whose type is recovered from z_h + sigma_0 noise (the latent the model trains on, sigma_0 of
polynomial_2 at T = 1000) by the nearest per-type mean of the noisy z_h (fitted on the same atoms); and the mean of
z_h over all atoms, which gaga.features=kept carries into GAGA's closed form (centred latents have mean 0).
"""

from __future__ import annotations

import argparse

import torch

from gaga.config import REPO_ROOT
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.sources import source_for
from gaga.diffusion.forward import Normalizer, remove_mean
from gaga.diffusion.schedules import NoiseSchedule
from gaga.models.geoldm import autoencoder_units
from gaga.nn import EquivariantEncoder


def type_recovery(z_h: torch.Tensor, types: torch.Tensor, num_types: int) -> float:
    """Fraction of atoms whose type is the one with the nearest mean latent (types absent from the atoms skipped)."""
    present = [k for k in range(num_types) if bool((types == k).any())]
    means = torch.stack([z_h[types == k].mean(0) for k in present])
    nearest = torch.cdist(z_h, means).argmin(1)
    return float((torch.tensor(present)[nearest] == types).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args()
    datamodule = MoleculeDataModule(
        source_for("qm9", REPO_ROOT / "data"), eval_batch_size=args.molecules, subset={"valid": args.molecules}
    )
    batch = next(iter(datamodule.ordered_loader("valid")))
    normalizer = Normalizer.from_config({"include_charges": True})
    schedule = NoiseSchedule("polynomial_2", 1000, 1e-5)
    sigma_0 = float(schedule.sigma(torch.zeros((), dtype=torch.long)))
    num_types = batch.x.shape[1]
    types = batch.x.argmax(1)
    pos = remove_mean(batch.pos, batch.batch, batch.num_graphs)
    print(f"{batch.num_graphs} validation molecules, {batch.num_nodes} atoms; sigma_0 = {sigma_0:.5f}")
    print("seed  units       mean(z_h)  std(z_h)   types recovered from z_h + sigma_0 noise")
    for seed in args.seeds:
        torch.manual_seed(seed)
        encoder = EquivariantEncoder(normalizer.num_features(num_types), latent_nf=1, hidden_nf=256, n_layers=1)
        for units in ("raw", "normalised"):
            scaled_pos, h = autoencoder_units(normalizer, units).encode(pos, batch.x, batch.charges)
            with torch.no_grad():
                _, z_h = encoder(scaled_pos, h, batch.batch)
            noisy = z_h + sigma_0 * torch.randn(z_h.shape, generator=torch.Generator().manual_seed(seed))
            recovered = type_recovery(noisy, types, num_types)
            print(f"{seed:>4}  {units:<10}  {float(z_h.mean()):+.4f}    {float(z_h.std()):.4f}     {recovered:.1%}")


if __name__ == "__main__":
    main()

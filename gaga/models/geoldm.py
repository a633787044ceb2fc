"""The GeoLDM backbone (Xu et al., ICML 2023): EDM's diffusion run on an equivariant autoencoder's latents.

As the released GeoLDM trains it: a fixed (never trained) EGNN encoder maps atoms to point-structured
latents, z = encoder mean + sigma_0 noise; the EGNN dynamics diffuse z; an EGNN decoder, trained jointly
through a reconstruction loss, maps the final latent back to coordinates and atom types. The two-stage option
first trains encoder and decoder as a VAE (KL weight 0.01) for `autoencoder_epochs`, then freezes the encoder.
GAGA tests the latents, so T* and v_hat are the latent space's, found once the encoder is final.
"""

from __future__ import annotations

import torch

from gaga.diffusion.forward import remove_mean, sample_noise
from gaga.diffusion.losses import GaussianLikelihood, per_molecule_sum, reconstruction_error
from gaga.diffusion.samplers import FinalState, SamplerOutput
from gaga.models.base import weights_digest
from gaga.models.build import build
from gaga.models.vp import VPDiffusion, split_by_step


class GeoLDM(VPDiffusion):
    """Geometric latent diffusion on PyG batches, with optional GAGA truncation on the latents.

    Args:
        net: config of the latent dynamics network; `num_features` is set to `latent_nf`.
        encoder: config of the encoder (`gaga.nn.EquivariantEncoder`); frozen at its initial weights.
        decoder: config of the decoder (`gaga.nn.EquivariantDecoder`); trained with the reconstruction loss.
        latent_nf: invariant latent features per atom (GeoLDM: 1 on QM9, 2 on GEOM-Drugs).
        autoencoder_epochs: 0 (the released GeoLDM: the encoder keeps its initial weights) or the number of first
            epochs that train encoder and decoder as a VAE, without diffusion; the encoder is frozen after them.
        kl_weight: weight of the VAE's KL term in those epochs (GeoLDM: 0.01).
        schedule, dataset: as for `gaga.models.edm.EDM`.
        **settings: the settings every backbone takes (`gaga.models.base.SHARED_SETTINGS`). Here
            `zero_mean_features` centres the latent features (and their noise) per molecule, as GAGA's closed form
            needs (mu_t = 0); the decoder is trained on the centred latents it is later given.
    """

    backbone_name = "geoldm"
    averaged_modules = ("net", "decoder")
    diffuses_atom_features = False  # charges enter the encoder only; the latents are what GAGA tests

    def __init__(
        self,
        net: dict,
        schedule: dict,
        dataset: dict,
        encoder: dict,
        decoder: dict,
        latent_nf: int = 1,
        autoencoder_epochs: int = 0,
        kl_weight: float = 0.01,
        **settings,
    ):
        super().__init__()
        if latent_nf < 1 or autoencoder_epochs < 0:
            raise ValueError(
                f"backbone.latent_nf must be >= 1 and backbone.autoencoder_epochs >= 0, got {latent_nf} and "
                f"{autoencoder_epochs}"
            )
        self.save_hyperparameters()
        self.apply_settings()
        self.schedule = build(schedule)
        num_features = self.normalizer.num_features(len(dataset["atom_symbols"]))
        self.encoder = build(encoder, num_features=num_features, latent_nf=latent_nf)
        self.encoder.requires_grad_(autoencoder_epochs > 0)  # trained only in the two-stage option's first stage
        self.decoder = build(decoder, num_features=num_features, latent_nf=latent_nf)
        self.net = self.build_denoiser(net, latent_nf)
        self.feature_nll = GaussianLikelihood()
        self.finish_setup()

    # --- stages -----------------------------------------------------------------------------------

    @property
    def in_autoencoder_stage(self) -> bool:
        """True during the two-stage option's first epochs (the VAE is trained, the diffusion is not)."""
        return self.current_epoch < self.hparams.autoencoder_epochs

    @property
    def gaussianity_ready(self) -> bool:
        """The latents are final once the encoder is: at once when it is fixed, else after the first stage."""
        return not self.in_autoencoder_stage

    def on_train_epoch_start(self) -> None:
        if not self.in_autoencoder_stage:
            self.encoder.requires_grad_(False)

    # --- latents ----------------------------------------------------------------------------------

    @torch.no_grad()
    def diffusion_state(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's mean latents (coordinates zero-CoM; features zero-meaned with `zero_mean_features`)."""
        pos, h = self.normalised_atoms(batch)
        z_pos, z_h = self.encoder(pos, h, batch.batch)
        if self.hparams.zero_mean_features:
            z_h = remove_mean(z_h, batch.batch, batch.num_graphs)
        return z_pos, z_h

    def sampled_latents(self, batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """z = encoder mean + sigma_0 * noise (noise in the model's zero-mean subspaces), detached."""
        z_pos, z_h = self.diffusion_state(batch)
        noise_pos, noise_h = sample_noise(
            z_pos, z_h, batch.batch, batch.num_graphs, self.hparams.zero_mean_features, generator
        )
        sigma_0 = self.schedule.sigma(torch.zeros((), dtype=torch.long, device=z_pos.device))
        return z_pos + sigma_0 * noise_pos, z_h + sigma_0 * noise_h

    def gaussianity_identity(self) -> dict:
        """The latents depend on the encoder: its weights are part of the identity."""
        return {
            **super().gaussianity_identity(),
            "latent_nf": self.hparams.latent_nf,
            "encoder": weights_digest(self.encoder),
        }

    # --- objectives -------------------------------------------------------------------------------

    def _reconstruction(self, decoder, z_pos, z_h, batch, per_dimension: bool) -> torch.Tensor:
        pos, h = self.normalised_atoms(batch)
        pos_rec, h_rec = decoder(z_pos, z_h, batch.batch)
        return reconstruction_error(
            pos_rec, h_rec, pos, h, self.normalizer, batch.batch, batch.num_graphs, per_dimension
        )

    def autoencoder_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The first stage's VAE objective: reconstruction error + kl_weight * 0.5 ||mu||^2 (GeoLDM's KL to N(0, I),
        which, as GeoLDM computes it, scores only the posterior means)."""
        pos, h = self.normalised_atoms(batch)
        mean_pos, mean_h, std_pos, std_h = self.encoder.posterior(pos, h, batch.batch)
        zero_mean = bool(self.hparams.zero_mean_features)
        if zero_mean:
            mean_h = remove_mean(mean_h, batch.batch, batch.num_graphs)
        noise_pos, noise_h = sample_noise(mean_pos, mean_h, batch.batch, batch.num_graphs, zero_mean, generator)
        z_pos = remove_mean(mean_pos + std_pos * noise_pos, batch.batch, batch.num_graphs)
        z_h = mean_h + std_h * noise_h
        if zero_mean:
            z_h = remove_mean(z_h, batch.batch, batch.num_graphs)
        pos_rec, h_rec = self.decoder(z_pos, z_h, batch.batch)
        reconstruction = reconstruction_error(
            pos_rec, h_rec, pos, h, self.normalizer, batch.batch, batch.num_graphs, per_dimension=True
        )
        kl = 0.5 * (
            per_molecule_sum(mean_pos**2, batch.batch, batch.num_graphs)
            + per_molecule_sum(mean_h**2, batch.batch, batch.num_graphs)
        )
        return {"loss": reconstruction + self.hparams.kl_weight * kl, "reconstruction": reconstruction, "kl": kl}

    def training_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """GeoLDM's joint objective: the latent l2 diffusion loss plus the decoder's reconstruction error
        (in the two-stage option's first stage: the VAE objective)."""
        if self.in_autoencoder_stage:
            return self.autoencoder_terms(batch, generator)
        z_pos, z_h = self.sampled_latents(batch, generator)
        diffusion, t = self.diffusion_loss(z_pos, z_h, batch, generator)
        reconstruction = self._reconstruction(self.decoder, z_pos, z_h, batch, per_dimension=True)
        return {"loss": diffusion + reconstruction, "reconstruction": reconstruction, **split_by_step(diffusion, t)}

    def nll_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The latent NLL estimate plus the reconstruction error, as GeoLDM reports its NLL."""
        z_pos, z_h = self.sampled_latents(batch, generator)
        terms = self.diffusion_nll(z_pos, z_h, batch, generator)
        terms["reconstruction"] = self._reconstruction(self.averaged("decoder"), z_pos, z_h, batch, False)
        terms["nll"] = terms["nll"] + terms["reconstruction"]
        return terms

    # --- decoding ---------------------------------------------------------------------------------

    def decode(self, final: FinalState, use_ema: bool = True) -> SamplerOutput:
        """Latent from p(z | z_0) for both blocks, then the decoder; atom types the argmax of its logits."""
        z_pos = final.sample_data(final.pos, final.eps_pos)
        z_h = final.sample_data(final.h, final.eps_h, zero_mean=bool(self.hparams.zero_mean_features))
        pos, h = self.averaged("decoder", use_ema)(z_pos, z_h, final.batch)
        onehot, charges = self.normalizer.split(h)
        return SamplerOutput(
            pos=pos * self.normalizer.position_scale,
            atom_types=onehot.argmax(dim=1),
            charges=None if charges is None else torch.round(charges).long(),
            num_evaluations=final.num_evaluations,
        )

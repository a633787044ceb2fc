"""The GeoLDM backbone (Xu et al., ICML 2023): EDM's diffusion run on an equivariant autoencoder's latents.

As the released GeoLDM (MinkaiXu/GeoLDM, `EnLatentDiffusion`) trains it: a fixed (never trained) EGNN encoder
maps atoms in raw units (angstrom, one-hot 0/1, charge Z: the released code never normalises before encoding) to
point-structured latents, z = encoder mean + sigma_0 noise; the EGNN dynamics diffuse z with EDM's loss; an EGNN
decoder, trained jointly through a reconstruction loss in the same raw units, maps the final latent back to
coordinates and atom types. The two-stage option first trains encoder and decoder as a VAE (KL weight 0.01, the
latent drawn with the released fixed sigma 0.0032) for `autoencoder_epochs`, then continues from the VAE's EMA
weights with the encoder frozen. GAGA tests the latents, so T* and v_hat are the latent space's, found once the
encoder is final.
"""

from __future__ import annotations

import math

import torch

from gaga.diffusion.decoding import FinalState, SamplerOutput
from gaga.diffusion.forward import Normalizer, remove_mean, sample_noise
from gaga.diffusion.losses import (
    GaussianLikelihood,
    atoms_per_molecule,
    per_molecule_sum,
    reconstruction_error,
)
from gaga.models.base import weights_digest
from gaga.models.build import build
from gaga.models.vp import VPDiffusion, split_by_step

ENCODER_INPUTS = ("raw", "normalised")
RELEASED_AUTOENCODER_SIGMA = 0.0032  # EnHierarchicalVAE.encode's fixed sigma of the first stage


class GeoLDM(VPDiffusion):
    """Geometric latent diffusion on PyG batches, with optional GAGA truncation on the latents.

    Args:
        net: config of the latent dynamics network; `num_features` is set to `latent_nf`.
        encoder: config of the encoder (`gaga.nn.EquivariantEncoder`); frozen at its initial weights.
        decoder: config of the decoder (`gaga.nn.EquivariantDecoder`); trained with the reconstruction loss.
        latent_nf: invariant latent features per atom (GeoLDM: 1 on QM9, 2 on GEOM-Drugs).
        encoder_inputs: the units the autoencoder reads and reconstructs: "raw" (the released GeoLDM: angstrom,
            one-hot 0/1, charge Z) or "normalised" (EDM's [1, 4, 10] scaling: one-hot / 4, Z / 10; gaga before
            issue 20, and what a checkpoint without this setting is read as).
        autoencoder_epochs: 0 (the released GeoLDM: the encoder keeps its initial weights) or the number of first
            epochs that train encoder and decoder as a VAE, without diffusion; then encoder and decoder continue
            from their EMA weights when EMA is on (as the released second stage loads `generative_model_ema.npy`),
            the encoder frozen.
        kl_weight: weight of the VAE's KL term in those epochs (GeoLDM: 0.01).
        autoencoder_sigma: the standard deviation of the VAE's latent in those epochs: the released 0.0032 (its
            `EnHierarchicalVAE.encode` fixes it), or null for the encoder's own posterior standard deviations
            (gaga before issue 20, and what a checkpoint without this setting is read as).
        schedule, dataset: as for `gaga.models.edm.EDM`.
        **settings: the settings every backbone takes (`gaga.models.base.SHARED_SETTINGS`). Here
            `zero_mean_features` centres the latent features (and their noise) per molecule, as GAGA's closed form
            needs (mu_t = 0); the decoder is trained on the centred latents it is later given.
    """

    backbone_name = "geoldm"
    averaged_modules = ("net", "decoder")  # the two-stage option adds the encoder (its EMA starts stage 2)
    diffuses_atom_features = False  # charges enter the encoder only; the latents are what GAGA tests
    # what checkpoints written before a setting existed meant by it (gaga.sampling.load_model, resuming)
    legacy_settings = {"encoder_inputs": "normalised", "autoencoder_sigma": None}

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
        encoder_inputs: str = "raw",
        autoencoder_sigma: float | None = RELEASED_AUTOENCODER_SIGMA,
        **settings,
    ):
        super().__init__()
        if latent_nf < 1 or autoencoder_epochs < 0:
            raise ValueError(
                f"backbone.latent_nf must be >= 1 and backbone.autoencoder_epochs >= 0, got {latent_nf} and "
                f"{autoencoder_epochs}"
            )
        if encoder_inputs not in ENCODER_INPUTS:
            raise ValueError(
                f"backbone.encoder_inputs must be one of {list(ENCODER_INPUTS)}, got {encoder_inputs!r}: set "
                f"backbone.encoder_inputs=raw (the released GeoLDM)"
            )
        if autoencoder_sigma is not None and not autoencoder_sigma > 0:
            raise ValueError(
                f"backbone.autoencoder_sigma must be > 0 or null, got {autoencoder_sigma}: set "
                f"backbone.autoencoder_sigma={RELEASED_AUTOENCODER_SIGMA} (the released GeoLDM)"
            )
        self.save_hyperparameters()
        self.apply_settings()
        self.autoencoder_units = autoencoder_units(self.normalizer, encoder_inputs)
        if autoencoder_epochs > 0:  # the second stage starts from the VAE's EMA weights, encoder included
            self.averaged_modules = ("net", "decoder", "encoder")
        self.schedule = build(schedule)
        num_features = self.normalizer.num_features(len(dataset["atom_symbols"]))
        self.encoder = build(encoder, num_features=num_features, latent_nf=latent_nf, context_nf=self.context_width)
        self.encoder.requires_grad_(autoencoder_epochs > 0)  # trained only in the two-stage option's first stage
        self.decoder = build(decoder, num_features=num_features, latent_nf=latent_nf, context_nf=self.context_width)
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

    def on_train_epoch_end(self) -> None:
        """At the end of the first stage: encoder and decoder take their EMA weights (before the epoch's checkpoint)."""
        if self.hparams.autoencoder_epochs and self.current_epoch == self.hparams.autoencoder_epochs - 1:
            with torch.no_grad():
                for name in ("encoder", "decoder"):
                    averaged = getattr(self, f"ema_{name}", None)
                    if averaged is not None:
                        getattr(self, name).load_state_dict(averaged.state_dict())

    # --- units and checkpoints ------------------------------------------------------------------------

    def autoencoder_atoms(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """PyG batch -> (coordinates at zero CoM, [one-hot, charges]) in the autoencoder's units (`encoder_inputs`)."""
        pos = remove_mean(batch.pos, batch.batch, batch.num_graphs)
        return self.autoencoder_units.encode(pos, batch.x, batch.charges)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming needs the checkpoint's encoder units (and, within the first stage, its latent sigma); a
        checkpoint without them meant `legacy_settings`."""
        keys = ["encoder_inputs"]
        if checkpoint.get("epoch", 0) < self.hparams.autoencoder_epochs:
            keys.append("autoencoder_sigma")
        for key in keys:
            stored = checkpoint["hyper_parameters"].get(key, self.legacy_settings[key])
            if stored != self.hparams[key]:
                stored_text, current = ("null" if v is None else v for v in (stored, self.hparams[key]))
                raise ValueError(
                    f"the checkpoint was trained with backbone.{key}={stored_text} but this run has "
                    f"backbone.{key}={current}: set backbone.{key}={stored_text} to resume it"
                )
        super().on_load_checkpoint(checkpoint)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Two-stage checkpoints written before the encoder had an EMA copy: the copy starts as the encoder."""
        if "encoder" in self.averaged_modules and getattr(self, "ema_encoder", None) is not None:
            state_dict = dict(state_dict)
            for key, value in list(state_dict.items()):
                if key.startswith("encoder."):
                    state_dict.setdefault(f"ema_{key}", value)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- latents ----------------------------------------------------------------------------------

    @torch.no_grad()
    def diffusion_state(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's mean latents of the atoms in its units (coordinates zero-CoM; features zero-meaned with
        `zero_mean_features`)."""
        pos, h = self.autoencoder_atoms(batch)
        z_pos, z_h = self.encoder(pos, h, batch.batch, self.batch_context(batch))
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
            "encoder_inputs": self.hparams.encoder_inputs,
            "encoder": weights_digest(self.encoder),
        }

    # --- objectives -------------------------------------------------------------------------------

    def _reconstruction(self, decoder, z_pos, z_h, batch, per_dimension: bool) -> torch.Tensor:
        """GeoLDM's reconstruction error of the decoded latent against the atoms in the autoencoder's units."""
        pos, h = self.autoencoder_atoms(batch)
        pos_rec, h_rec = decoder(z_pos, z_h, batch.batch, self.batch_context(batch))
        return reconstruction_error(
            pos_rec, h_rec, pos, h, self.autoencoder_units, batch.batch, batch.num_graphs, per_dimension
        )

    def autoencoder_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The first stage's VAE objective: reconstruction error + kl_weight * 0.5 ||mu||^2 (GeoLDM's KL to N(0, I),
        which, as GeoLDM computes it, scores only the posterior means); the latent is the posterior mean plus
        `autoencoder_sigma` (released: 0.0032) times noise, or the posterior's own std when that is null."""
        pos, h = self.autoencoder_atoms(batch)
        context = self.batch_context(batch)
        mean_pos, mean_h, std_pos, std_h = self.encoder.posterior(pos, h, batch.batch, context)
        if self.hparams.autoencoder_sigma is not None:
            std_pos = std_h = self.hparams.autoencoder_sigma
        zero_mean = bool(self.hparams.zero_mean_features)
        if zero_mean:
            mean_h = remove_mean(mean_h, batch.batch, batch.num_graphs)
        noise_pos, noise_h = sample_noise(mean_pos, mean_h, batch.batch, batch.num_graphs, zero_mean, generator)
        z_pos = remove_mean(mean_pos + std_pos * noise_pos, batch.batch, batch.num_graphs)
        z_h = mean_h + std_h * noise_h
        if zero_mean:
            z_h = remove_mean(z_h, batch.batch, batch.num_graphs)
        pos_rec, h_rec = self.decoder(z_pos, z_h, batch.batch, context)
        reconstruction = reconstruction_error(
            pos_rec, h_rec, pos, h, self.autoencoder_units, batch.batch, batch.num_graphs, per_dimension=True
        )
        kl = 0.5 * (
            per_molecule_sum(mean_pos**2, batch.batch, batch.num_graphs)
            + per_molecule_sum(mean_h**2, batch.batch, batch.num_graphs)
        )
        return {"loss": reconstruction + self.hparams.kl_weight * kl, "reconstruction": reconstruction, "kl": kl}

    def training_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """GeoLDM's joint objective, as released: the latent l2 diffusion loss (EDM's, 0.5 x error / ((3 + L) N_max)
        for t > 0) plus the decoder's reconstruction error / ((3 + F) N_max), weight 1 each (in the two-stage
        option's first stage: the VAE objective)."""
        if self.in_autoencoder_stage:
            return self.autoencoder_terms(batch, generator)
        z_pos, z_h = self.sampled_latents(batch, generator)
        diffusion, t = self.diffusion_loss(z_pos, z_h, batch, generator)
        reconstruction = self._reconstruction(self.decoder, z_pos, z_h, batch, per_dimension=True)
        return {"loss": diffusion + reconstruction, "reconstruction": reconstruction, **split_by_step(diffusion, t)}

    def nll_terms(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """GeoLDM's reported NLL: the latent NLL estimate, the (undivided) reconstruction error and the constants
        of its `log_constants_p_h_given_z0`, N * 3 * (0.5 gamma_0 + 0.5 log 2 pi) (3, not latent_nf, as released)."""
        z_pos, z_h = self.sampled_latents(batch, generator)
        terms = self.diffusion_nll(z_pos, z_h, batch, generator)
        terms["reconstruction"] = self._reconstruction(self.averaged("decoder"), z_pos, z_h, batch, False)
        gamma_0 = self.schedule.gamma(torch.zeros(batch.num_graphs, dtype=torch.long, device=z_pos.device))
        num_atoms = atoms_per_molecule(batch.batch, batch.num_graphs)
        terms["h_given_z0_constants"] = num_atoms * z_pos.shape[1] * (0.5 * gamma_0 + 0.5 * math.log(2 * math.pi))
        terms["nll"] = terms["nll"] + terms["reconstruction"] + terms["h_given_z0_constants"]
        return terms

    # --- decoding ---------------------------------------------------------------------------------

    def decode(self, final: FinalState, use_ema: bool = True, context: torch.Tensor | None = None) -> SamplerOutput:
        """Latent from p(z | z_0) for both blocks, then the decoder; atom types the argmax of its logits, charges
        its charge column in the autoencoder's units, rounded."""
        z_pos = final.sample_data(final.pos, final.eps_pos)
        z_h = final.sample_data(final.h, final.eps_h, zero_mean=bool(self.hparams.zero_mean_features))
        pos, h = self.averaged("decoder", use_ema)(z_pos, z_h, final.batch, context)
        onehot, charges = self.autoencoder_units.split(h)
        return SamplerOutput(
            pos=pos * self.autoencoder_units.position_scale,
            atom_types=onehot.argmax(dim=1),
            charges=None if charges is None else torch.round(charges).long(),
            num_evaluations=final.num_evaluations,
        )


def autoencoder_units(normalizer: Normalizer, encoder_inputs: str) -> Normalizer:
    """The scaling of the atoms the autoencoder reads and reconstructs: none ("raw") or the backbone's normaliser."""
    if encoder_inputs == "raw":
        return Normalizer(1.0, 1.0, 1.0, 0.0, 0.0, normalizer.include_charges)
    return normalizer

"""GeoLDM's equivariant autoencoder: EGNN encoder atoms -> point-structured latents, EGNN decoder back to atoms.

Latents keep the molecule's point structure: per atom, 3 equivariant coordinates (zero centre of mass) and
`latent_nf` invariant features. Batches are PyG-style (flat atoms, sorted `batch`), as for the dynamics. A
conditional model's encoder and decoder also read each molecule's context (`context_nf` normalised properties),
appended to every atom's input features as in GeoLDM.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from gaga.diffusion.forward import remove_mean
from gaga.nn.dynamics import atom_context
from gaga.nn.egnn import EGNN
from gaga.nn.graph import fully_connected_edges


class EquivariantEncoder(nn.Module):
    r"""GeoLDM's `EGNN_encoder_QM9`: a Gaussian posterior q(z | x, h) with point structure.

    :math:`(h', x') = \mathrm{EGNN}(h, x)` with `n_layers` blocks (GeoLDM: 1); the means are
    :math:`(\Pi x', \mathrm{MLP}(h')_{[:L]})` (:math:`\Pi` removes the centre of mass, L = latent_nf); the MLP's
    next L columns are log-variances of the features and its last column, summed over the molecule, the
    log-variance of the coordinates (one per molecule, as in GeoLDM). The released GeoLDM never trains the
    encoder and uses only the means (`forward`); the two-stage option trains the whole posterior.
    """

    def __init__(
        self,
        num_features: int,
        latent_nf: int,
        hidden_nf: int = 256,
        n_layers: int = 1,
        context_nf: int = 0,
        **egnn_options,
    ):
        super().__init__()
        self.latent_nf, self.context_nf = latent_nf, int(context_nf)
        self.egnn = EGNN(num_features + self.context_nf, hidden_nf, hidden_nf, n_layers, **egnn_options)
        self.head = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, 2 * latent_nf + 1))

    def posterior(
        self, pos: torch.Tensor, h: torch.Tensor, batch: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean coordinates [N, 3] zero-CoM, mean features [N, L], coordinate std [N, 1], feature std [N, L])."""
        h = torch.cat([h, *atom_context(context, batch, self.context_nf)], dim=1)
        h_out, pos_out = self.egnn(h, pos, fully_connected_edges(batch))
        out = self.head(h_out)
        latent_nf = self.latent_nf
        log_var_pos = scatter(out[:, 2 * latent_nf], batch, dim=0, reduce="sum")[batch].unsqueeze(1)
        std_h = torch.exp(0.5 * out[:, latent_nf : 2 * latent_nf])
        return remove_mean(pos_out, batch), out[:, :latent_nf], torch.exp(0.5 * log_var_pos), std_h

    def forward(
        self, pos: torch.Tensor, h: torch.Tensor, batch: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior means: latent coordinates [N, 3] (zero CoM, equivariant), features [N, L] (invariant)."""
        mean_pos, mean_h, _, _ = self.posterior(pos, h, batch, context)
        return mean_pos, mean_h


class EquivariantDecoder(nn.Module):
    r"""GeoLDM's `EGNN_decoder_QM9`: :math:`(\hat x, \hat h) = (\Pi x', h')`, (h', x') = EGNN(z_h, z_x).

    :math:`\hat h` holds one logit per atom type (then the normalised charge, when the data has charges).
    GeoLDM gives the decoder as many blocks as the diffusion network.
    """

    def __init__(
        self,
        num_features: int,
        latent_nf: int,
        hidden_nf: int = 256,
        n_layers: int = 9,
        context_nf: int = 0,
        **egnn_options,
    ):
        super().__init__()
        self.context_nf = int(context_nf)
        self.egnn = EGNN(latent_nf + self.context_nf, num_features, hidden_nf, n_layers, **egnn_options)

    def forward(
        self, z_pos: torch.Tensor, z_h: torch.Tensor, batch: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructed coordinates [N, 3] (zero CoM) and feature logits [N, num_features]."""
        z_h = torch.cat([z_h, *atom_context(context, batch, self.context_nf)], dim=1)
        h_out, pos_out = self.egnn(z_h, z_pos, fully_connected_edges(batch))
        return remove_mean(pos_out, batch), h_out

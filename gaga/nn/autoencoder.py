"""GeoLDM's equivariant autoencoder: EGNN encoder atoms -> point-structured latents, EGNN decoder back to atoms.

Latents keep the molecule's point structure: per atom, 3 equivariant coordinates (zero centre of mass) and
`latent_nf` invariant features. Batches are PyG-style (flat atoms, sorted `batch`), as for the dynamics.
"""

from __future__ import annotations

import torch
from torch import nn

from gaga.diffusion.forward import remove_mean
from gaga.nn.egnn import EGNN
from gaga.nn.graph import fully_connected_edges


class EquivariantEncoder(nn.Module):
    r"""GeoLDM's `EGNN_encoder_QM9`, mean only: :math:`(z_x, z_h) = (\Pi x',\ \mathrm{MLP}(h'))`.

    :math:`(h', x') = \mathrm{EGNN}(h, x)` with `n_layers` blocks (GeoLDM: 1); :math:`\Pi` removes the
    centre of mass. The released GeoLDM never trains the encoder and draws the latent as this mean plus
    noise at the diffusion schedule's sigma_0, so no variance head is needed.
    """

    def __init__(self, num_features: int, latent_nf: int, hidden_nf: int = 256, n_layers: int = 1, **egnn_options):
        super().__init__()
        self.egnn = EGNN(num_features, hidden_nf, hidden_nf, n_layers, **egnn_options)
        self.head = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, latent_nf))

    def forward(self, pos: torch.Tensor, h: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent coordinates [N, 3] (zero CoM, equivariant) and latent features [N, latent_nf] (invariant)."""
        h_out, pos_out = self.egnn(h, pos, fully_connected_edges(batch))
        return remove_mean(pos_out, batch), self.head(h_out)


class EquivariantDecoder(nn.Module):
    r"""GeoLDM's `EGNN_decoder_QM9`: :math:`(\hat x, \hat h) = (\Pi x', h')`, (h', x') = EGNN(z_h, z_x).

    :math:`\hat h` holds one logit per atom type (then the normalised charge, when the data has charges).
    GeoLDM gives the decoder as many blocks as the diffusion network.
    """

    def __init__(self, num_features: int, latent_nf: int, hidden_nf: int = 256, n_layers: int = 9, **egnn_options):
        super().__init__()
        self.egnn = EGNN(latent_nf, num_features, hidden_nf, n_layers, **egnn_options)

    def forward(self, z_pos: torch.Tensor, z_h: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructed coordinates [N, 3] (zero CoM) and feature logits [N, num_features]."""
        h_out, pos_out = self.egnn(z_h, z_pos, fully_connected_edges(batch))
        return remove_mean(pos_out, batch), h_out

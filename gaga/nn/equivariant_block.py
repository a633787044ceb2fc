"""EDM's EquivariantBlock: a stack of invariant GCL sublayers followed by one coordinate update.

Edge features are the squared distances of the block's input coordinates and of the network's input.
"""

from __future__ import annotations

import torch
from torch import nn

from gaga.nn.coord_update import EquivariantCoordUpdate
from gaga.nn.distance_embedding import SinusoidalDistanceEmbedding
from gaga.nn.gcl import GCL
from gaga.nn.graph import edge_geometry


class EquivariantBlock(nn.Module):
    r"""One E(3)-equivariant block.

    .. math::
        a_{ij} = [\,\|x_i - x_j\|^2,\ \|x^{0}_i - x^{0}_j\|^2\,], \quad
        h \leftarrow \mathrm{GCL}_k(h, a) \ (k = 1..\text{inv\_sublayers}), \quad
        x \leftarrow \mathrm{CoordUpdate}(h, x, a)

    :math:`x` are the block's input coordinates and :math:`x^0` the EGNN's input coordinates (both
    distances pass through the sinusoidal embedding when one is given). The coordinate update uses
    :math:`(x_i - x_j) / (\|x_i - x_j\| + \text{norm\_constant})`.
    """

    def __init__(
        self,
        hidden_nf: int,
        inv_sublayers: int = 1,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        distance_embedding: SinusoidalDistanceEmbedding | None = None,
        normalization_factor: float = 1.0,
        aggregation_method: str = "sum",
    ):
        super().__init__()
        self.norm_constant = float(norm_constant)
        self.distance_embedding = distance_embedding
        edge_attr_nf = 2 * (distance_embedding.dim if distance_embedding is not None else 1)
        self.gcls = nn.ModuleList(
            GCL(hidden_nf, edge_attr_nf, attention, normalization_factor, aggregation_method)
            for _ in range(inv_sublayers)
        )
        self.coord_update = EquivariantCoordUpdate(
            hidden_nf, edge_attr_nf, tanh, coords_range, normalization_factor, aggregation_method
        )

    def reset_parameters(self) -> None:
        for layer in (*self.gcls, self.coord_update):
            layer.reset_parameters()

    def forward(
        self, h: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor, input_distances: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_distances` [E, 1 or embedding dim]: the (embedded) squared distances of the EGNN input."""
        sq_dist, unit_diff = edge_geometry(pos, edge_index, self.norm_constant)
        if self.distance_embedding is not None:
            sq_dist = self.distance_embedding(sq_dist)
        edge_attr = torch.cat([sq_dist, input_distances], dim=1)
        for gcl in self.gcls:
            h = gcl(h, edge_index, edge_attr)
        return h, self.coord_update(h, pos, edge_index, unit_diff, edge_attr)

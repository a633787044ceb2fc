"""EDM's equivariant coordinate update as a PyG MessagePassing module.

Moves each atom along normalised difference vectors, so rotations and translations commute with it. Under bf16
mixed precision only phi_x's matmuls are bf16: its output weight, the steps and the new coordinates are float32.
"""

from __future__ import annotations

import torch
from torch import nn

from gaga.nn.graph import NormalizedMessagePassing


class EquivariantCoordUpdate(NormalizedMessagePassing):
    r"""Coordinate update with bounded, invariant edge weights.

    .. math::
        x_i' = x_i + \frac{1}{Z} \sum_{j \ne i} \frac{x_i - x_j}{\|x_i - x_j\| + C}\,
               w_{ij}, \qquad
        w_{ij} = \begin{cases} r \tanh \phi_x(h_i, h_j, a_{ij}) & \text{tanh} \\
                               \phi_x(h_i, h_j, a_{ij}) & \text{otherwise} \end{cases}

    :math:`C` = `norm_constant` (applied by the caller when it builds the differences), :math:`r` =
    `coords_range`, :math:`Z` = `normalization_factor` ("sum") or the neighbour count ("mean").
    :math:`\phi_x` is Linear-SiLU-Linear-SiLU-Linear(no bias), its last layer Xavier-uniform with
    gain 0.001 so that the untrained network barely moves atoms (EDM's initialisation).
    """

    def __init__(
        self,
        hidden_nf: int,
        edge_attr_nf: int,
        tanh: bool = True,
        coords_range: float = 15.0,
        normalization_factor: float = 1.0,
        aggregation_method: str = "sum",
    ):
        super().__init__(normalization_factor, aggregation_method)
        self.tanh, self.coords_range = tanh, float(coords_range)
        self.coord_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf + edge_attr_nf, hidden_nf),
            nn.SiLU(),
            nn.Linear(hidden_nf, hidden_nf),
            nn.SiLU(),
            nn.Linear(hidden_nf, 1, bias=False),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in self.coord_mlp:
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        nn.init.xavier_uniform_(self.coord_mlp[-1].weight, gain=0.001)

    def forward(
        self,
        h: torch.Tensor,
        pos: torch.Tensor,
        edge_index: torch.Tensor,
        unit_diff: torch.Tensor,
        edge_attr: torch.Tensor,
    ) -> torch.Tensor:
        return pos + self.propagate(edge_index, h=h, unit_diff=unit_diff, edge_attr=edge_attr)

    def message(self, h_i: torch.Tensor, h_j: torch.Tensor, unit_diff: torch.Tensor, edge_attr: torch.Tensor):
        weight = self.coord_mlp(torch.cat([h_i, h_j, edge_attr], dim=1)).float()
        if self.tanh:
            weight = torch.tanh(weight) * self.coords_range
        return unit_diff * weight

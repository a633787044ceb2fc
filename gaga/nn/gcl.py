"""EDM's graph convolutional sublayer (GCL) as a PyG MessagePassing module.

Invariant: it reads distances only through the edge features, never the coordinates themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from gaga.nn.graph import NormalizedMessagePassing


class GCL(NormalizedMessagePassing):
    r"""Feature update with an edge MLP, an optional attention gate and a residual node MLP.

    .. math::
        m_{ij} = \phi_e(h_i, h_j, a_{ij}), \qquad
        \tilde m_{ij} = m_{ij} \cdot \sigma(\phi_{att}(m_{ij})) \ \text{(attention)}, \\
        h_i' = h_i + \phi_h\Big(h_i, \tfrac{1}{Z} \sum_{j \ne i} \tilde m_{ij}\Big)

    with :math:`a_{ij}` the edge features (squared distances), :math:`Z` = `normalization_factor`
    for `aggregation_method="sum"` (EDM's QM9 and GEOM runs use 1), or a mean over neighbours for
    "mean". :math:`\phi_e` is Linear-SiLU-Linear-SiLU, :math:`\phi_h` Linear-SiLU-Linear, as in EDM.
    """

    def __init__(
        self,
        hidden_nf: int,
        edge_attr_nf: int,
        attention: bool = True,
        normalization_factor: float = 1.0,
        aggregation_method: str = "sum",
    ):
        super().__init__(normalization_factor, aggregation_method)
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf + edge_attr_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf), nn.SiLU()
        )
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf))
        self.att_mlp = nn.Sequential(nn.Linear(hidden_nf, 1), nn.Sigmoid()) if attention else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default Linear initialisation, as EDM uses."""
        super().reset_parameters()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        aggregated = self.propagate(edge_index, h=h, edge_attr=edge_attr)
        return h + self.node_mlp(torch.cat([h, aggregated], dim=1))

    def message(self, h_i: torch.Tensor, h_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        m_ij = self.edge_mlp(torch.cat([h_i, h_j, edge_attr], dim=1))
        return m_ij * self.att_mlp(m_ij) if self.att_mlp is not None else m_ij

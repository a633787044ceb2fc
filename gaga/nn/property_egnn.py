"""EDM's property classifier network (Satorras et al. 2021, EGNN; EDM's `qm9/property_prediction`), on PyG batches.

An E(n)-invariant regressor: one value per molecule from its atom types and coordinates.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from gaga.nn.gcl import GCL
from gaga.nn.graph import edge_geometry, fully_connected_edges


class PropertyEGNN(nn.Module):
    r"""EDM's property EGNN (`models_property.EGNN` with `E_GCL_mask` layers), as its published run sets it.

    .. math::
        h^0 = W_{in} h, \quad h^{l+1} = \mathrm{GCL}_l(h^l; \|x_i - x_j\|^2), \quad
        y = \phi_{graph}\Big(\sum_{i \in \text{molecule}} \phi_{node}(h^L_i)\Big)

    Each layer is gaga's GCL (`gaga.nn.gcl`), which computes what `E_GCL_mask` computes: messages
    Linear-SiLU-Linear-SiLU of (h_i, h_j, squared distance), optionally gated by a sigmoid of a Linear of the message
    (attention), summed over the molecule's other atoms, and a residual Linear-SiLU-Linear node update. The squared
    distances are those of the input coordinates in every layer: `E_GCL_mask` computes a coordinate update in its
    class but never applies it (its `coord_model` call is commented out and its coordinate MLP deleted), so
    `coords_weight` has no effect and is not a setting here. `phi_node` and `phi_graph` are Linear-SiLU-Linear
    (`node_dec`, `graph_dec`), and the pooling is a sum over the molecule's atoms. EDM's `node_attr` option (the
    input one-hot concatenated into every node update) is not implemented: its published run leaves it off.
    """

    def __init__(self, num_types: int, hidden_nf: int = 128, n_layers: int = 7, attention: bool = True):
        super().__init__()
        self.embedding = nn.Linear(num_types, hidden_nf)
        self.layers = nn.ModuleList(GCL(hidden_nf, edge_attr_nf=1, attention=attention) for _ in range(n_layers))
        self.node_dec = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf))
        self.graph_dec = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, 1))

    def forward(self, one_hot: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """One value per molecule [num_graphs] from atom types (one-hot [N, num_types]), coordinates [N, 3] and each
        atom's molecule (`batch`, sorted, as PyG batches are)."""
        edge_index = fully_connected_edges(batch, num_graphs)
        squared_distances, _ = edge_geometry(pos, edge_index)
        h = self.embedding(one_hot)
        for layer in self.layers:
            h = layer(h, edge_index, squared_distances)
        pooled = scatter(self.node_dec(h), batch, dim=0, dim_size=num_graphs, reduce="sum")
        return self.graph_dec(pooled).squeeze(1)

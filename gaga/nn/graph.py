"""Graph plumbing shared by the EGNN layers: fully connected edges, edge geometry and EDM's aggregation.

Batches are PyG-style (no padding): atoms of one molecule are contiguous and `batch` is sorted.
"""

from __future__ import annotations

import torch
from torch_geometric.nn import MessagePassing


def fully_connected_edges(batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """All ordered pairs (j -> i), i != j, inside each molecule, as edge_index [2, sum n_g (n_g - 1)].

    Row 0 holds the sender j and row 1 the receiver i (PyG's source_to_target flow). Built with
    tensor ops only: each atom is repeated once per atom of its molecule, then self pairs are dropped.
    """
    counts = torch.bincount(batch, minlength=num_graphs or 0)
    first_atom = torch.cumsum(counts, 0) - counts  # index of each molecule's first atom
    pairs_per_atom = counts[batch]
    receiver = torch.repeat_interleave(torch.arange(batch.numel(), device=batch.device), pairs_per_atom)
    block_start = torch.repeat_interleave(torch.cumsum(pairs_per_atom, 0) - pairs_per_atom, pairs_per_atom)
    sender = first_atom[batch[receiver]] + torch.arange(receiver.numel(), device=batch.device) - block_start
    keep = sender != receiver
    return torch.stack([sender[keep], receiver[keep]])


def edge_geometry(
    pos: torch.Tensor, edge_index: torch.Tensor, norm_constant: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances [E, 1] and EDM's normalised differences (x_i - x_j) / (|x_i - x_j| + norm_constant)."""
    sender, receiver = edge_index
    diff = pos[receiver] - pos[sender]
    sq_dist = (diff**2).sum(dim=1, keepdim=True)
    return sq_dist, diff / (torch.sqrt(sq_dist + 1e-8) + norm_constant)


class NormalizedMessagePassing(MessagePassing):
    """MessagePassing with EDM's aggregation: a sum divided by `normalization_factor`, or a mean.

    EDM's "mean" counts the padding of its dense batches as neighbours; here it is the mean over the
    molecule's other atoms. EDM's published QM9 and GEOM-Drugs models use "sum" with factor 1.
    """

    def __init__(self, normalization_factor: float = 1.0, aggregation_method: str = "sum"):
        if aggregation_method not in ("sum", "mean"):
            raise ValueError(f"aggregation_method must be 'sum' or 'mean', got {aggregation_method!r}")
        super().__init__(aggr=aggregation_method)
        self.normalization_factor = float(normalization_factor)
        self.aggregation_method = aggregation_method

    def aggregate(self, inputs: torch.Tensor, index: torch.Tensor, ptr=None, dim_size: int | None = None):
        aggregated = super().aggregate(inputs, index, ptr, dim_size)
        return aggregated / self.normalization_factor if self.aggregation_method == "sum" else aggregated

"""EDM's E(n)-equivariant graph network: node embedding, a stack of EquivariantBlocks, output embedding.

Maps (h [N, in_node_nf], pos [N, 3]) on a given edge set to (h' [N, out_node_nf], pos' [N, 3]), both float32
under bf16 autocast too: the input and output embeddings stay float32 (bf16 would round the time column t/T
to 8 significant bits, merging up to 4 neighbouring steps of T = 1000), as do the residual stream and geometry.
"""

from __future__ import annotations

import torch
from torch import nn

from gaga.nn.distance_embedding import SinusoidalDistanceEmbedding
from gaga.nn.equivariant_block import EquivariantBlock
from gaga.nn.graph import edge_geometry, float32


class EGNN(nn.Module):
    r"""EDM's `EGNN` (egnn_new.py).

    .. math::
        h^0 = W_{in} h, \quad (h^{l+1}, x^{l+1}) = \mathrm{Block}_l(h^l, x^l; \|x^0_i - x^0_j\|^2),
        \quad h' = W_{out} h^L, \ x' = x^L

    Every block gets the same `coords_range` (EDM computes coords_range / n_layers but never uses it).
    """

    def __init__(
        self,
        in_node_nf: int,
        out_node_nf: int,
        hidden_nf: int = 256,
        n_layers: int = 9,
        inv_sublayers: int = 1,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        sin_embedding: bool = False,
        normalization_factor: float = 1.0,
        aggregation_method: str = "sum",
    ):
        super().__init__()
        self.distance_embedding = SinusoidalDistanceEmbedding() if sin_embedding else None
        self.embedding = nn.Linear(in_node_nf, hidden_nf)
        self.blocks = nn.ModuleList(
            EquivariantBlock(
                hidden_nf,
                inv_sublayers,
                attention,
                tanh,
                coords_range,
                norm_constant,
                self.distance_embedding,
                normalization_factor,
                aggregation_method,
            )
            for _ in range(n_layers)
        )
        self.embedding_out = nn.Linear(hidden_nf, out_node_nf)

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        self.embedding_out.reset_parameters()
        for block in self.blocks:
            block.reset_parameters()

    def forward(
        self, h: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_distances, _ = edge_geometry(pos, edge_index)
        if self.distance_embedding is not None:
            input_distances = self.distance_embedding(input_distances)
        with float32(h):
            h = self.embedding(h)
        for block in self.blocks:
            h, pos = block(h, pos, edge_index, input_distances)
        with float32(h):
            return self.embedding_out(h), pos

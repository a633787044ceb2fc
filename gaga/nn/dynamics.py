"""EDM's EGNN dynamics: the noise-prediction network eps_theta(z_t, t) on PyG-style molecule batches.

Call signature is the diffusion code's denoiser interface: net(pos_t, h_t, t, batch) -> (eps_pos, eps_h); a
conditional network (`context_nf` > 0) also takes `context`, the molecules' normalised properties [B, context_nf].
"""

from __future__ import annotations

import torch
from torch import nn

from gaga.diffusion.forward import remove_mean
from gaga.nn.egnn import EGNN
from gaga.nn.graph import fully_connected_edges


class EGNNDynamics(nn.Module):
    r"""EDM's `EGNN_dynamics_QM9` in `egnn_dynamics` mode, without padding or masks.

    .. math::
        (h', x') = \mathrm{EGNN}([h_t, t/T, c], x_t), \quad
        \hat\epsilon_x = \Pi(x' - x_t), \quad \hat\epsilon_h = h'_{[:F]}

    on fully connected molecules (no self loops, no messages between molecules). :math:`\Pi` removes
    each molecule's mean, so :math:`\hat\epsilon_x` lives on the zero-CoM subspace. As in EDM the EGNN
    also predicts a time column, which is dropped, and in training a coordinate output containing NaN is replaced
    by zeros (for the whole batch); outside training a non-finite output raises NonFiniteOutputError.
    `zero_mean_features=True` also centres :math:`\hat\epsilon_h` per molecule,
    as the GAGA reference code does. With `context_nf` > 0 each atom's input also holds its molecule's context c
    (EDM's conditional model: the context columns follow the time column, and their outputs are dropped).

    Defaults are EDM's published QM9 model (README command and `main_qm9.py` defaults): 256 features,
    9 blocks of 1 GCL each, attention, tanh-bounded coordinate steps with coords_range 15,
    norm_constant 1, sum aggregation divided by normalization_factor 1, no sinusoidal embedding.
    EDM's GEOM-Drugs model differs only in n_layers=4.
    """

    def __init__(
        self,
        num_features: int,
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
        zero_mean_features: bool = False,
        context_nf: int = 0,
    ):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"EGNNDynamics needs at least one atom feature column, got num_features={num_features}")
        self.num_features, self.context_nf = num_features, int(context_nf)
        self.zero_mean_features = zero_mean_features
        self.egnn = EGNN(
            in_node_nf=num_features + 1 + self.context_nf,
            out_node_nf=num_features + 1 + self.context_nf,
            hidden_nf=hidden_nf,
            n_layers=n_layers,
            inv_sublayers=inv_sublayers,
            attention=attention,
            tanh=tanh,
            coords_range=coords_range,
            norm_constant=norm_constant,
            sin_embedding=sin_embedding,
            normalization_factor=normalization_factor,
            aggregation_method=aggregation_method,
        )

    def reset_parameters(self) -> None:
        self.egnn.reset_parameters()

    def compile(self, *args, **kwargs) -> None:
        """torch.compile the message passing (the EGNN) in place; the edge list, whose length depends on the data,
        and the projections stay eager. Arguments as `nn.Module.compile` (e.g. dynamic=True)."""
        self.egnn.compile(*args, **kwargs)

    def forward(
        self,
        pos: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor,
        batch: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted noise for coordinates [N, 3] and features [N, F].

        `t` is the normalised time t/T per molecule, shape [B] (B = number of molecules; a 0-d tensor
        is broadcast to every atom and then B is taken from `batch`). `context` [B, context_nf]: the molecules'
        normalised properties, required exactly when the network is conditional.
        """
        if h.shape[1] != self.num_features:
            raise ValueError(f"EGNNDynamics was built for {self.num_features} feature columns, h has {h.shape[1]}")
        if t.dim() == 0:
            num_graphs, time_per_atom = None, t.expand(pos.shape[0])
        else:
            num_graphs, time_per_atom = t.shape[0], t[batch]
        edge_index = fully_connected_edges(batch, num_graphs)
        h_in = torch.cat([h, time_per_atom.to(h.dtype).unsqueeze(1), *atom_context(context, batch, self.context_nf)], 1)
        h_out, pos_out = self.egnn(h_in, pos, edge_index)
        eps_pos, eps_h = pos_out - pos, h_out[:, : self.num_features]
        if not self.training:  # sampling and validation: a non-finite output is an error, never a silent zero
            check_finite(eps_pos, eps_h)
        eps_pos = _zero_if_nan(eps_pos)
        eps_pos = remove_mean(eps_pos, batch, num_graphs)
        if self.zero_mean_features:
            eps_h = remove_mean(eps_h, batch, num_graphs)
        return eps_pos, eps_h


def atom_context(context: torch.Tensor | None, batch: torch.Tensor, context_nf: int) -> list[torch.Tensor]:
    """Each atom's copy of its molecule's context [N, context_nf], as a list to concatenate (empty when the network
    is unconditional); ValueError when the context is missing, unexpected or of the wrong width."""
    if context is None and not context_nf:
        return []
    if context is None or context.dim() != 2 or context.shape[1] != context_nf:
        got = "none" if context is None else f"shape {tuple(context.shape)}"
        raise ValueError(f"the network was built for a context of {context_nf} columns per molecule, got {got}")
    return [context[batch]]


class NonFiniteOutputError(RuntimeError):
    """The network returned NaN or infinite values outside training (its weights or inputs are broken)."""


def check_finite(eps_pos: torch.Tensor, eps_h: torch.Tensor) -> None:
    """NonFiniteOutputError unless both outputs are finite (one wait for the device)."""
    if not bool(torch.isfinite(eps_pos).all() & torch.isfinite(eps_h).all()):
        raise NonFiniteOutputError("the network's output is not finite (NaN or infinite)")


def _zero_if_nan(x: torch.Tensor) -> torch.Tensor:
    """EDM's NaN guard on the coordinate output in training, without a host sync: the whole tensor becomes zero if
    any entry is NaN (EDM also prints a warning; here the non-finite loss it leads to is skipped and logged). The
    feature output is not guarded, as in EDM."""
    return torch.where(torch.isnan(x).any(), torch.zeros_like(x), x)

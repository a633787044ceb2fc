"""EDM's EGNN as torch_geometric MessagePassing modules: layers, the network, the dynamics, GeoLDM's autoencoder.

`EGNNDynamics` is the denoiser the diffusion code calls: net(pos_t, h_t, t / T, batch) -> (eps_pos, eps_h).
"""

from gaga.nn.autoencoder import EquivariantDecoder, EquivariantEncoder
from gaga.nn.coord_update import EquivariantCoordUpdate
from gaga.nn.distance_embedding import SinusoidalDistanceEmbedding
from gaga.nn.dynamics import EGNNDynamics
from gaga.nn.egnn import EGNN
from gaga.nn.equivariant_block import EquivariantBlock
from gaga.nn.gcl import GCL
from gaga.nn.graph import NormalizedMessagePassing, edge_geometry, fully_connected_edges

__all__ = [
    "EGNN",
    "GCL",
    "EGNNDynamics",
    "EquivariantBlock",
    "EquivariantDecoder",
    "EquivariantEncoder",
    "EquivariantCoordUpdate",
    "NormalizedMessagePassing",
    "SinusoidalDistanceEmbedding",
    "edge_geometry",
    "fully_connected_edges",
]

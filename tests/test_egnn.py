"""Tests of the EGNN dynamics (gaga.nn): E(3) equivariance, permutation equivariance and isolation of molecules.

The coordinate head is re-initialised with gain 1 so that the outputs are large and the checks can fail;
tolerances are relative to the largest output entry (float32 unless stated).
"""

import itertools

import pytest
import torch
from torch import nn

from gaga.nn import EGNNDynamics, fully_connected_edges
from gaga.nn.coord_update import EquivariantCoordUpdate
from gaga.nn.dynamics import NonFiniteOutputError

SIZES = [3, 1, 7, 5]  # molecules in the test batch, one of them a single atom
NUM_FEATURES = 6


def make_batch(sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    pos = 2.0 * torch.randn(len(batch), 3, generator=gen)
    h = torch.randn(len(batch), NUM_FEATURES, generator=gen)
    t = torch.rand(len(sizes), generator=gen)
    return pos, h, t, batch


def make_net(seed=0, **kwargs):
    torch.manual_seed(seed)
    options = dict(hidden_nf=32, n_layers=3, inv_sublayers=2) | kwargs
    net = EGNNDynamics(NUM_FEATURES, **options)
    for module in net.modules():
        if isinstance(module, EquivariantCoordUpdate):
            nn.init.xavier_uniform_(module.coord_mlp[-1].weight, gain=1.0)
    return net.eval()


def assert_close_rel(actual, expected, tol):
    """Entry-wise |actual - expected| <= tol * max(1, max |expected|)."""
    scale = float(expected.abs().max().clamp(min=1.0))
    torch.testing.assert_close(actual, expected, atol=tol * scale, rtol=0)


def random_orthogonal(seed, reflect=False):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def test_fully_connected_edges_match_all_pairs_within_molecules():
    _, _, _, batch = make_batch()
    edges = fully_connected_edges(batch)
    expected = {(j, i) for i, j in itertools.product(range(len(batch)), repeat=2) if i != j and batch[i] == batch[j]}
    assert edges.shape == (2, sum(n * (n - 1) for n in SIZES))
    assert set(map(tuple, edges.t().tolist())) == expected


@pytest.mark.parametrize(
    "options, dtype",
    [
        ({}, torch.float32),
        ({"aggregation_method": "mean", "attention": False}, torch.float32),
        # EDM's sinusoidal embedding reaches 430 rad/A: float32 rounding of distances alone moves it by 1e-4 rad
        ({"sin_embedding": True, "tanh": False}, torch.float64),
    ],
    ids=["edm", "mean-noattention", "sin-notanh"],
)
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_coordinates_equivariant_and_features_invariant(options, dtype, reflect):
    net = make_net(**options).to(dtype)
    pos, h, t, batch = (x.to(dtype) if x.is_floating_point() else x for x in make_batch())
    rotation, shift = random_orthogonal(1, reflect).to(dtype), torch.tensor([3.0, -1.0, 0.5], dtype=dtype)
    with torch.no_grad():
        eps_pos, eps_h = net(pos, h, t, batch)
        eps_pos_moved, eps_h_moved = net(pos @ rotation.T + shift, h, t, batch)
    assert eps_pos.abs().mean() > 0.05 and eps_h.abs().mean() > 0.05  # not trivially equivariant
    assert_close_rel(eps_pos_moved, eps_pos @ rotation.T, 1e-4)
    assert_close_rel(eps_h_moved, eps_h, 1e-4)


def test_coordinate_output_has_zero_mean_per_molecule():
    net = make_net()
    pos, h, t, batch = make_batch()
    with torch.no_grad():
        eps_pos, _ = net(pos, h, t, batch)
    sums = torch.zeros(len(SIZES), 3).index_add_(0, batch, eps_pos)
    assert sums.abs().max() < 1e-6 * eps_pos.abs().max() * max(SIZES)
    assert eps_pos[batch == 1].abs().max() < 1e-6  # a lone atom cannot move


def test_permuting_atoms_permutes_outputs():
    net = make_net()
    pos, h, t, batch = make_batch()
    gen = torch.Generator().manual_seed(3)
    # shuffle atoms inside each molecule so that `batch` stays sorted
    perm = torch.cat(
        [torch.nonzero(batch == g).flatten()[torch.randperm(n, generator=gen)] for g, n in enumerate(SIZES)]
    )
    assert not torch.equal(perm, torch.arange(len(batch)))
    with torch.no_grad():
        eps_pos, eps_h = net(pos, h, t, batch)
        eps_pos_perm, eps_h_perm = net(pos[perm], h[perm], t, batch)
    assert_close_rel(eps_pos_perm, eps_pos[perm], 1e-5)
    assert_close_rel(eps_h_perm, eps_h[perm], 1e-5)


def test_molecules_in_a_batch_do_not_exchange_messages():
    net = make_net()
    pos, h, t, batch = make_batch()
    changed = batch == 2
    pos2, h2, t2 = pos.clone(), h.clone(), t.clone()
    pos2[changed] += torch.randn(int(changed.sum()), 3)
    h2[changed] = -h2[changed]
    t2[2] = 1.0 - t2[2]
    with torch.no_grad():
        eps_pos, eps_h = net(pos, h, t, batch)
        eps_pos2, eps_h2 = net(pos2, h2, t2, batch)
        alone_pos, alone_h = net(pos[batch == 0], h[batch == 0], t[:1], batch[batch == 0])
    assert (eps_pos2[changed] - eps_pos[changed]).abs().max() > 1e-2
    # float32 sums over differently sized edge sets differ in the last bits (thread-count dependent): 1e-5
    assert_close_rel(eps_pos2[~changed], eps_pos[~changed], 1e-5)
    assert_close_rel(eps_h2[~changed], eps_h[~changed], 1e-5)
    assert_close_rel(alone_pos, eps_pos[batch == 0], 1e-5)
    assert_close_rel(alone_h, eps_h[batch == 0], 1e-5)


def test_time_is_an_input():
    net = make_net()
    pos, h, t, batch = make_batch()
    with torch.no_grad():
        early, late = net(pos, h, torch.zeros_like(t), batch), net(pos, h, torch.ones_like(t), batch)
    assert (early[1] - late[1]).abs().max() > 1e-3


def test_nan_coordinate_output_is_zeroed_in_training_like_edm_and_refused_outside():
    """EDM (egnn_dynamics): a NaN velocity is reset to zero, the feature output is left as it is. Outside training a
    non-finite output is an error instead (it would make finite-looking molecules)."""
    net = make_net()
    pos, h, t, batch = make_batch()
    pos[0, 0] = float("nan")
    net.train()
    with torch.no_grad():
        eps_pos, eps_h = net(pos, h, t, batch)
    assert torch.equal(eps_pos, torch.zeros_like(eps_pos)) and not bool(torch.isfinite(eps_h).all())
    net.eval()
    with torch.no_grad(), pytest.raises(NonFiniteOutputError, match="not finite"):
        net(pos, h, t, batch)


def test_zero_mean_features_option_centres_feature_output():
    net = make_net(zero_mean_features=True)
    pos, h, t, batch = make_batch()
    with torch.no_grad():
        _, eps_h = net(pos, h, t, batch)
    sums = torch.zeros(len(SIZES), NUM_FEATURES).index_add_(0, batch, eps_h)
    assert eps_h.abs().mean() > 0.05
    assert sums.abs().max() < 1e-6 * eps_h.abs().max() * max(SIZES)


def edm_parameter_count(features, hidden, layers, sublayers, edge_nf=2):
    """EDM's egnn_new layer shapes, counted by hand: embeddings, GCLs with attention, coordinate MLPs."""

    def linear(n_in, n_out, bias=True):
        return n_in * n_out + (n_out if bias else 0)

    gcl = linear(2 * hidden + edge_nf, hidden) + linear(hidden, hidden)  # edge MLP
    gcl += linear(2 * hidden, hidden) + linear(hidden, hidden) + linear(hidden, 1)  # node MLP, attention
    coord = linear(2 * hidden + edge_nf, hidden) + linear(hidden, hidden) + linear(hidden, 1, bias=False)
    embeddings = linear(features + 1, hidden) + linear(hidden, features + 1)
    return embeddings + layers * (sublayers * gcl + coord)


def test_published_qm9_configuration_has_edm_layer_shapes():
    net = EGNNDynamics(num_features=6)  # QM9: 5 atom types + charge, EDM's defaults otherwise
    assert sum(p.numel() for p in net.parameters()) == edm_parameter_count(6, 256, 9, 1)

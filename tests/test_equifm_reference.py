"""Flow matching against EquiFM's released sampling code (AlgoMole/MolFM, sampling/cnf_models.py), skipped unless
it is in the git-ignored experiments/molfm_reference/sampling/ (git --git-dir=<mirror> show HEAD:sampling/<file>).

The release holds the sampler, not the training code, and its weights file is not needed: both sides run the
release's own EGNN dynamics (random weights, seeded) on the same noise. Compared: the feature path's T(t), beta(t)
and M_t; the velocity field (the network's output with M_t on the features, EquiFM's "HB_path"); one dopri5 solve
from t = 1 to 0.5 at rtol = atol = 1e-4 (to 0.5, not 0: below t = 0 the release's M_t has a pole, which gaga clamps).
"""

import sys

import numpy as np
import pytest
import torch

from gaga.config import REPO_ROOT
from gaga.diffusion.flow_path import FEATURES, FlowPath
from gaga.diffusion.samplers import Adaptive, Chain, run

REFERENCE = REPO_ROOT / "experiments" / "molfm_reference" / "sampling"
pytestmark = pytest.mark.skipif(not (REFERENCE / "cnf_models.py").exists(), reason="EquiFM's release not present")


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("torchdiffeq")
    sys.path.insert(0, str(REFERENCE))
    try:
        import cnf_models
    finally:
        sys.path.remove(str(REFERENCE))
    return cnf_models


def _models(cnf_models, features: int = 6):
    torch.manual_seed(0)
    dynamics = cnf_models.EGNN_dynamics_QM9(
        in_node_nf=features + 1,
        context_node_nf=0,
        n_dims=3,
        hidden_nf=32,
        n_layers=2,
        attention=True,
        tanh=True,
        norm_constant=1,
        inv_sublayers=1,
        normalization_factor=1,
        aggregation_method="sum",
    )
    flows = cnf_models.Cnflows(dynamics, in_node_nf=features, n_dims=3, discrete_path="HB_path", include_charges=True)
    return dynamics, flows


class DenseNet(torch.nn.Module):
    """The release's dynamics called as a gaga network (pos, h, t, batch) on molecules of one size."""

    def __init__(self, dynamics, molecules: int, atoms: int):
        super().__init__()
        self.dynamics, self.shape = dynamics, (molecules, atoms)
        self.node_mask = torch.ones(molecules, atoms, 1)
        self.edge_mask = torch.ones(molecules * atoms * atoms, 1)

    def forward(self, pos, h, t, batch):
        xh = torch.cat([pos, h], dim=1).reshape(*self.shape, -1)
        out = self.dynamics._forward(t[:1].reshape(()), xh, self.node_mask, self.edge_mask, None).reshape(len(pos), -1)
        return out[:, :3], out[:, 3:]


def test_feature_path_schedule_is_the_releases(reference):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    block = FlowPath().blocks[FEATURES]
    torch.testing.assert_close(block.integrated_beta(t), reference.T(t))
    reference_m = -0.5 * reference.T_hat(t) / (1 - torch.exp(-reference.T(t)) + 1e-5)
    torch.testing.assert_close(block.multiplier(t), reference_m)


def test_velocity_field_and_a_dopri5_solve_match_the_release(reference):
    molecules, atoms = 4, 7
    dynamics, flows = _models(reference)
    node_mask = torch.ones(molecules, atoms, 1)
    edge_mask = torch.ones(molecules * atoms * atoms, 1)
    torch.manual_seed(1)
    z = flows.sample_combined_position_feature_noise(molecules, atoms, node_mask)
    batch = torch.repeat_interleave(torch.arange(molecules), atoms)
    flat = z.reshape(molecules * atoms, -1)
    field = FlowPath(1000, "hybrid").field(DenseNet(dynamics, molecules, atoms))
    with torch.no_grad():
        for t in (1.0, 0.7, 0.3, 0.05):
            time = torch.tensor(t)
            expected = flows.phi(time, z, node_mask, edge_mask, None)
            expected[:, :, 3:] = expected[:, :, 3:] * (
                -0.5 * reference.T_hat(time) / (1 - torch.exp(-reference.T(time)) + 1e-5)
            )
            v_pos, v_h = field(flat[:, :3], flat[:, 3:], torch.full((molecules,), t), batch)
            torch.testing.assert_close(torch.cat([v_pos, v_h], 1), expected.reshape(molecules * atoms, -1))
        released = flows.decode_chain(z, [1.0, 0.5], node_mask, edge_mask, None)[-1].reshape(molecules * atoms, -1)
        frames = {}

        def keep(step, pos, h):
            frames[step / 1000] = torch.cat([pos, h], 1)

        chain = Chain(field, FlowPath(1000, "hybrid"), batch)  # zero CoM, features as they are
        run(Adaptive(), chain, lambda final: final, flat[:, :3], flat[:, 3:], [1000, 500], None, keep)  # to t = 0.5
    torch.testing.assert_close(frames[0.5], released, rtol=1e-4, atol=1e-4)
    assert np.isfinite(released.numpy()).all()

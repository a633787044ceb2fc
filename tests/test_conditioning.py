"""Conditional generation, the model side: the context path keeps every network E(3)- and permutation-equivariant
and is read; conditional EDM, GeoLDM and flow matching train and sample with requested or drawn property values;
requests a model cannot take stop with the fix."""

import numpy as np
import pytest
import torch

from gaga.cli import run_sampling, run_training
from gaga.config import compose
from gaga.io import read_sdf
from gaga.nn import EGNNDynamics, EquivariantDecoder, EquivariantEncoder
from gaga.sampling import generate
from tests.conftest import tiny_setup
from tests.test_egnn import NUM_FEATURES, SIZES, assert_close_rel, make_batch, make_net, random_orthogonal
from tests.train_runs import TINY_FIT

CONTEXT_NF = 2


def context_for(num_molecules: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(num_molecules, CONTEXT_NF, generator=torch.Generator().manual_seed(seed))


def autoencoder_outputs(module, pos, h, batch, context):
    if isinstance(module, EquivariantEncoder):
        return module(pos, h, batch, context)
    return module(pos, h[:, :2], batch, context)  # the decoder reads 2 latent feature columns


NETWORKS = {
    "dynamics": lambda: make_net(context_nf=CONTEXT_NF),
    "encoder": lambda: EquivariantEncoder(NUM_FEATURES, 2, hidden_nf=16, n_layers=2, context_nf=CONTEXT_NF).eval(),
    "decoder": lambda: EquivariantDecoder(NUM_FEATURES, 2, hidden_nf=16, n_layers=2, context_nf=CONTEXT_NF).eval(),
}


def run(name, net, pos, h, t, batch, context):
    with torch.no_grad():
        if name == "dynamics":
            return net(pos, h, t, batch, context)
        return autoencoder_outputs(net, pos, h, batch, context)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_context_path_is_equivariant_and_read(name):
    torch.manual_seed(0)
    net = NETWORKS[name]()
    pos, h, t, batch = make_batch()
    context = context_for(len(SIZES))
    out_pos, out_h = run(name, net, pos, h, t, batch, context)
    rotation, shift = random_orthogonal(1).float(), torch.tensor([3.0, -1.0, 0.5])
    moved_pos, moved_h = run(name, net, pos @ rotation.T + shift, h, t, batch, context)
    assert_close_rel(moved_pos, out_pos @ rotation.T, 1e-4)  # zero-CoM outputs: the shift drops out
    assert_close_rel(moved_h, out_h, 1e-4)
    perm = torch.cat([torch.nonzero(batch == g).flatten().flip(0) for g in range(len(SIZES))])
    perm_pos, perm_h = run(name, net, pos[perm], h[perm], t, batch, context)
    assert_close_rel(perm_pos, out_pos[perm], 1e-5)
    assert_close_rel(perm_h, out_h[perm], 1e-5)
    other_pos, other_h = run(name, net, pos, h, t, batch, context_for(len(SIZES), seed=6))
    assert (other_h - out_h).abs().max() > 1e-3  # the context is an input
    # one molecule's context reaches only its own atoms
    changed = context.clone()
    changed[2] += 1.0
    _, changed_h = run(name, net, pos, h, t, batch, changed)
    unchanged = batch != 2
    torch.testing.assert_close(changed_h[unchanged], out_h[unchanged])


def test_a_conditional_network_needs_its_context():
    pos, h, t, batch = make_batch()
    with pytest.raises(ValueError, match="built for a context of 2 columns per molecule, got none"):
        make_net(context_nf=CONTEXT_NF)(pos, h, t, batch)
    with pytest.raises(ValueError, match=r"context of 0 columns per molecule, got shape \(4, 2\)"):
        EGNNDynamics(NUM_FEATURES, hidden_nf=8, n_layers=1)(pos, h, t, batch, context_for(len(SIZES)))


@pytest.mark.parametrize("backbone", ["edm", "geoldm", "flow_matching"])
def test_conditional_backbones_train_and_generate_what_was_asked(backbone):
    datamodule, model = tiny_setup(backbone, conditioning=("alpha",))
    batch = next(iter(datamodule.train_dataloader()))
    loss = model.training_terms(batch, torch.Generator().manual_seed(0))["loss"].mean()
    loss.backward()
    assert torch.isfinite(loss) and model.context_width == 1
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    model.eval()
    asked = generate(model, 6, batch_size=3, sampler="auto", seed=0, progress=False, condition={"alpha": 80.5})
    np.testing.assert_array_equal(asked.molecules.properties["alpha"], np.full(6, 80.5, dtype=np.float32))
    drawn = generate(model, 40, batch_size=20, seed=0, progress=False).molecules
    histograms = model.property_given_size.histograms["alpha"]
    for size, value in zip(drawn.num_atoms, drawn.properties["alpha"], strict=True):
        low, high, _ = histograms[int(size)]
        assert low - 1e-4 <= value <= high + 1e-4  # drawn from that atom count's training values


def test_requests_a_model_cannot_take_stop_with_the_fix():
    _, conditional = tiny_setup("edm", conditioning=("alpha",))
    _, unconditional = tiny_setup("edm")
    with pytest.raises(ValueError, match="conditioned on \\['alpha'\\], not on gap"):
        generate(conditional, 2, progress=False, condition={"gap": 5000.0})
    with pytest.raises(ValueError, match="this model is unconditional"):
        generate(unconditional, 2, progress=False, condition={"alpha": 80.5})
    with pytest.raises(ValueError, match="a context of 1 properties per molecule is required"):
        conditional.sample(torch.tensor([3, 4]))


def test_conditional_quickstart_trains_resumes_and_samples_a_requested_value(tmp_path):
    """train.py with the conditional quickstart (alpha, EDM's second half), a resumed run, then sample.py with
    condition.alpha=80.5: the SDF's data items, the XYZ comments and properties.csv record the value asked for."""
    overrides = [*TINY_FIT, "experiment=quickstart_cond", "gaga.dataset_molecules=200", "logger=csv"]
    overrides.remove("experiment=quickstart")
    run_training(compose("train", overrides, output_dir=str(tmp_path / "a")))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    stored = torch.load(last, weights_only=True)["hyper_parameters"]["dataset"]["conditioning"]
    assert stored["norms"]["names"] == ["alpha"] and stored["units"] == ["Bohr^3"]
    run_training(compose("train", [*overrides, "trainer.max_epochs=2", f"ckpt_path={last}"], str(tmp_path / "b")))
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4 and resumed["hyper_parameters"]["dataset"]["conditioning"] == stored
    request = [f"ckpt={last}", "n_samples=4", "batch_size=4", "evaluate=false", "pictures=0", "condition.alpha=80.5"]
    run_sampling(compose("sample", request, str(tmp_path / "s")))
    sdf = (tmp_path / "s" / "samples.sdf").read_text()
    assert sdf.count(">  <alpha>\n80.5\n") == 4
    assert (tmp_path / "s" / "samples.xyz").read_text().count(" alpha=80.5\n") == 4
    rows = (tmp_path / "s" / "properties.csv").read_text().splitlines()
    assert rows[0] == "molecule,num_atoms,alpha" and [row.split(",")[2] for row in rows[1:]] == ["80.5"] * 4
    assert len(read_sdf(tmp_path / "s" / "samples.sdf")) == 4  # the data items keep the file readable

"""The speed switches against their slow, plain versions: EDM's adaptive clipping on the device against a transcription
of EDM's queue, bf16 autocast against float32 (equivariance, loss, NLL), torch.compile against eager.

bf16 keeps 8 significant bits: unit roundoff u = 2^-8. Rounding an MLP's inputs and weights to bf16 moves its output
by a few u of its scale, so under autocast the network's outputs (and their equivariance) hold to a few u, against
1e-6 in float32.
"""

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from gaga.nn import EGNNDynamics
from tests.conftest import tiny_setup
from tests.test_egnn import assert_close_rel, make_batch, random_orthogonal
from tests.test_train import optimisation_step

U_BF16 = 2.0**-8
QM9_SIZES = [9, 17, 25, 4, 19, 29, 12, 18]  # molecule sizes as in QM9 (with hydrogens)


class EDMQueue:
    """EDM's utils.Queue and gradient_clipping (e3_diffusion_for_molecules/utils.py), transcribed with numpy."""

    def __init__(self):
        self.items = [3000.0]  # main_qm9.py: gradnorm_queue.add(3000)

    def clip(self, grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
        max_norm = 1.5 * np.mean(self.items) + 2 * np.std(self.items)
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        self.items.insert(0, max_norm if norm > max_norm else norm)
        if len(self.items) > 50:
            self.items.pop()
        return [g * min(max_norm / (norm + 1e-6), 1.0) for g in grads], max_norm


def test_adaptive_clipping_on_the_device_is_edms():
    _, model = tiny_setup()
    params = model.trainable_parameters()
    queue, gen = EDMQueue(), torch.Generator().manual_seed(0)
    clipped_steps = 0
    for step in range(60):
        norm = 10.0 if step in (53, 57, 58) else 1.0 + 0.2 * torch.rand((), generator=gen).item()
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        grads = [g * norm / total for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        expected, max_norm = queue.clip(grads)
        model.on_before_optimizer_step(None)
        model.configure_gradient_clipping(None)
        for p, g in zip(params, expected, strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=0)
        np.testing.assert_allclose(model.gradient_guard.grad_norms.numpy(), queue.items[::-1], rtol=1e-12)
        clipped_steps += norm > max_norm
    assert clipped_steps == 3  # the three spikes, once the seed 3000 has left the 50-step window


def edm_init_net(**options):
    """An EGNN dynamics with EDM's initialisation (coordinate head at gain 0.001), as trained from."""
    torch.manual_seed(0)
    return EGNNDynamics(6, **({"hidden_nf": 64, "n_layers": 4} | options)).eval()


def test_bf16_autocast_keeps_the_dynamics_equivariant_to_a_few_roundoffs():
    net = edm_init_net()
    pos, h, t, batch = make_batch(QM9_SIZES, seed=1)
    q, shift = random_orthogonal(3).float(), torch.tensor([1.5, -2.0, 0.7])
    with torch.no_grad():
        fp32 = net(pos, h, t, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = net(pos, h, t, batch)
            moved = net(pos @ q.T + shift, h, t, batch)
    assert all(x.dtype == torch.float32 for x in (*bf16, *moved))
    assert_close_rel(moved[0], bf16[0] @ q.T, 8 * U_BF16)  # measured up to 3.5 u (1.3 u at 9 x 256)
    assert_close_rel(moved[1], bf16[1], 8 * U_BF16)
    assert_close_rel(bf16[0], fp32[0], 8 * U_BF16)  # and near the float32 network
    assert_close_rel(bf16[1], fp32[1], 8 * U_BF16)


def test_bf16_autocast_training_loss_matches_float32_and_the_nll_stays_float32():
    """The l2 loss is ||eps - eps_hat||^2 with eps exact: a relative error of a few u on eps_hat moves each molecule's
    loss by less than u of itself (measured: 0.2 u here, 1.0 u on the trained quickstart model). Validation's NLL
    turns autocast off (under bf16 it moved a molecule's NLL by up to 50 nats): equal to float32. Sampling under
    autocast gives float32 molecules."""
    datamodule, model = tiny_setup(net={"_target_": "gaga.nn.EGNNDynamics", "hidden_nf": 64, "n_layers": 3})
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        fp32 = model.training_terms(batch, torch.Generator().manual_seed(0))["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.training_terms(batch, torch.Generator().manual_seed(0))["loss"]
    torch.testing.assert_close(bf16, fp32, rtol=U_BF16, atol=0)
    logged = {}
    model.log = lambda name, value, **_: logged.setdefault(name, []).append(value)
    model.validation_step(batch, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.validation_step(batch, 0)
        output, atoms = model.sample(torch.tensor([4, 11]), stride=25)
    assert torch.equal(*logged["val/nll"])
    assert output.pos.shape == (15, 3) and output.pos.dtype == torch.float32 and torch.isfinite(output.pos).all()
    assert output.atom_types.shape == atoms.shape == (15,)


@pytest.fixture
def dynamo_counters():
    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


def test_compiled_dynamics_equal_eager_on_batches_of_other_sizes_without_recompiling(dynamo_counters):
    """aot_eager runs dynamo's capture and AOT autograd's graphs without inductor's code generation (the GPU check
    compares inductor's output)."""
    net = edm_init_net(hidden_nf=16, n_layers=1).train()

    def forward_backward(batch):
        pos = batch[0].clone().requires_grad_()
        outputs = net(pos, *batch[1:])
        (grad,) = torch.autograd.grad(sum(x.square().sum() for x in outputs), pos)
        return *outputs, grad

    batches = [make_batch([3, 1, 7, 5], seed=0), make_batch([9, 4, 2, 6, 8], seed=1)]
    eager = [forward_backward(batch) for batch in batches]
    net.compile(dynamic=True, backend="aot_eager")
    for batch, expected in zip(batches, eager, strict=True):
        for actual, value in zip(forward_backward(batch), expected, strict=True):
            torch.testing.assert_close(actual, value, rtol=1e-5, atol=1e-6)
    assert dynamo_counters["stats"]["unique_graphs"] == 1  # one graph for both atom and edge counts


def test_compile_switch_compiles_denoiser_and_ema_keeping_checkpoint_keys(dynamo_counters):
    datamodule, model = tiny_setup(compile=True)
    keys = set(model.state_dict())
    compiles = CompileCounterWithBackend("eager")
    model.compile_denoiser(backend=compiles)
    model.setup("fit")  # the switch's hook: already compiled, nothing more
    assert set(model.state_dict()) == keys  # no `_orig_mod.` prefix: checkpoints and EMA load as before
    optimizer = model.configure_optimizers()
    for step, batch in zip(range(3), datamodule.train_dataloader(), strict=False):  # three batch sizes
        optimisation_step(model, optimizer, batch, step)
    assert compiles.frame_count == 1
    for num_atoms in ([3, 9, 5], [12, 2]):  # the EMA copy without gradients: one more graph, for both batches
        output, batch = model.sample(torch.tensor(num_atoms), stride=25)
        assert output.pos.shape == (sum(num_atoms), 3) and output.atom_types.shape == batch.shape
        assert torch.isfinite(output.pos).all()
    assert compiles.frame_count == 2


def test_bad_compile_value_is_refused_with_the_key():
    with pytest.raises(ValueError, match=r"backbone.compile must be true or false, got 'yes'"):
        tiny_setup(compile="yes")

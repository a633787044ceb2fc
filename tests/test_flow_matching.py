"""Flow matching (EquiFM's linear path) with GAGA: path variance, learned and analytic velocities, ODE sampling,
the OT coupling, training, sampling and T* on the path."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gaga.callbacks.gaussianity import GaussianityCallback
from gaga.data.elements import QM9_ATOMS
from gaga.diffusion.flow_matching import integrate, integrate_adaptive, ot_couple, velocity_loss
from gaga.diffusion.forward import remove_mean
from gaga.gaussianity import molecule_blocks
from tests.conftest import quiet_trainer, tiny_setup

SIGMA2 = 0.25  # variance of the toy data


def _per_dof_variance(values: np.ndarray, offsets: np.ndarray) -> float:
    """Mean square per degree of freedom of per-molecule zero-meaned rows: sum ||v||^2 / sum (N - 1) * width."""
    counts = np.diff(offsets)
    return float((values**2).sum() / ((counts - 1).sum() * values.shape[1]))


@pytest.mark.parametrize("step", [100, 300, 550, 800])
def test_path_variance_matches_the_closed_form_on_qm9(qm9_sample, step):
    """z_t = (1 - t) x + t eps of real molecules has variance a^2 v_hat + b^2 per degree of freedom (within 2 %)."""
    _, model = tiny_setup(
        "flow_matching",
        zero_mean_features=True,
        schedule={"_target_": "gaga.diffusion.flow_path.LinearPath", "timesteps": 1000},
    )
    blocks, offsets = molecule_blocks(qm9_sample, QM9_ATOMS)
    counts = np.diff(offsets)
    v_hat = {
        "pos": _per_dof_variance(blocks["positions"], offsets),
        "h": _per_dof_variance(blocks["features"], offsets),
    }
    model.set_truncation({"t_star": step, "v_hat": v_hat})
    rng, t = np.random.default_rng(step), step / 1000
    measured = []
    for values in (blocks["positions"], blocks["features"]):
        noise = rng.standard_normal(values.shape)
        noise -= np.repeat(np.add.reduceat(noise, offsets[:-1]) / counts[:, None], counts, axis=0)
        measured.append(_per_dof_variance((1 - t) * values + t * noise, offsets))
    np.testing.assert_allclose(model.start_variance(step), measured, rtol=0.02)


def _toy_batch(n: int, generator: torch.Generator):
    """n one-atom molecules: zero coordinates, one feature drawn from N(0, SIGMA2)."""
    batch = torch.arange(n)
    return torch.zeros(n, 3), torch.randn(n, 1, generator=generator) * SIGMA2**0.5, batch


def _analytic_gain(t: torch.Tensor) -> torch.Tensor:
    """E[eps - x | z_t] = z_t * (t - (1 - t) s2) / ((1 - t)^2 s2 + t^2) for x ~ N(0, s2), eps ~ N(0, 1)."""
    return (t - (1 - t) * SIGMA2) / ((1 - t) ** 2 * SIGMA2 + t**2)


class GainField(torch.nn.Module):
    """v(z, t) = z * g(t) with g a small MLP of t: the family that holds the Gaussian's exact velocity."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def forward(self, pos, h, t, batch):
        return torch.zeros_like(pos), h * self.gain(t[batch, None])


def test_learned_velocity_of_a_gaussian_matches_the_analytic_velocity():
    torch.manual_seed(0)
    field, generator = GainField(), torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(1500):
        pos, h, batch = _toy_batch(512, generator)
        noise = (torch.zeros_like(pos), torch.randn(h.shape, generator=generator))
        t = torch.rand(len(batch), generator=generator) * 0.98 + 0.01
        loss = velocity_loss(field, pos, h, noise, t, batch, len(batch)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    times = torch.tensor([[0.2], [0.5], [0.8]])
    with torch.no_grad():
        np.testing.assert_allclose(field.gain(times).numpy(), _analytic_gain(times).numpy(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("method, t_start", [("euler", 1.0), ("heun", 1.0), ("heun", 0.55), ("adaptive", 1.0)])
def test_ode_with_the_analytic_velocity_recovers_the_data_gaussian(method, t_start):
    """From N(0, a^2 s2 + b^2) at t_start (t_start < 1 is GAGA's closed-form start) the ODE ends at N(0, s2)."""
    generator = torch.Generator().manual_seed(1)
    n = 20_000
    batch = torch.arange(n)
    start_variance = (1 - t_start) ** 2 * SIGMA2 + t_start**2
    h = torch.randn(n, 1, generator=generator, dtype=torch.float64) * start_variance**0.5

    def analytic(pos, h, t, batch):
        return torch.zeros_like(pos), h * _analytic_gain(t[batch, None].to(h))

    pos, unchanged = torch.zeros(n, 3, dtype=torch.float64), lambda p, q: (p, q)
    if method == "adaptive":
        pytest.importorskip("torchdiffeq")  # an optional dependency (gaga[ode]); the dev extra installs it
        _, h_0, evaluations = integrate_adaptive(analytic, pos, h, batch, t_start, unchanged)
        assert 6 <= evaluations < 500  # dopri5: six evaluations a step, a handful of steps on this smooth field
    else:
        times = list(np.linspace(t_start, 0.0, 201 if method == "euler" else 51))
        _, h_0, evaluations = integrate(analytic, pos, h, batch, times, method, unchanged)
        assert evaluations == (len(times) - 1) * (2 if method == "heun" else 1)
    assert float(h_0.var()) == pytest.approx(SIGMA2, rel=0.03) and abs(float(h_0.mean())) < 0.01


def test_ot_coupling_is_permutation_and_rotation_consistent():
    generator = torch.Generator().manual_seed(2)
    sizes = torch.tensor([6, 9])
    batch = torch.repeat_interleave(torch.arange(2), sizes)
    types = torch.tensor([0, 1, 1, 0, 2, 1, 0, 0, 1, 1, 2, 2, 0, 1, 1])
    pos = remove_mean(torch.randn(15, 3, generator=generator, dtype=torch.float64) * 1.5, batch)
    eps_pos = remove_mean(torch.randn(15, 3, generator=generator, dtype=torch.float64), batch)
    eps_h = torch.randn(15, 4, generator=generator, dtype=torch.float64)
    coupled_pos, coupled_h = ot_couple(pos, types, eps_pos, eps_h, batch)
    assert float(((coupled_pos - pos) ** 2).sum()) < float(((eps_pos - pos) ** 2).sum())
    # the coupled noise is a rotation of a within-type permutation of the noise
    torch.testing.assert_close(
        torch.linalg.norm(coupled_pos, dim=1).sort().values, torch.linalg.norm(eps_pos, dim=1).sort().values
    )
    rotation = torch.from_numpy(Rotation.random(random_state=3).as_matrix())
    rotated_pos, rotated_h = ot_couple(pos @ rotation.T, types, eps_pos @ rotation.T, eps_h, batch)
    torch.testing.assert_close(rotated_pos, coupled_pos @ rotation.T)
    torch.testing.assert_close(rotated_h, coupled_h)
    within_types = torch.tensor([3, 2, 1, 0, 4, 5, 12, 7, 13, 9, 11, 10, 6, 8, 14])  # swaps only equal types
    assert torch.equal(types[within_types], types)
    permuted_pos, permuted_h = ot_couple(pos[within_types], types, eps_pos, eps_h, batch)
    torch.testing.assert_close(permuted_pos, coupled_pos[within_types])
    torch.testing.assert_close(permuted_h, coupled_h[within_types])


@pytest.mark.parametrize("ot_coupling", [False, True])
def test_a_few_training_steps_reduce_the_loss(ot_coupling):
    torch.manual_seed(0)
    datamodule, model = tiny_setup("flow_matching", train=8, batch_size=8, ot_coupling=ot_coupling)
    batch = next(iter(datamodule.train_dataloader()))
    optimizer = model.configure_optimizers()
    losses = []
    for step in range(120):
        loss = model.training_terms(batch, torch.Generator().manual_seed(step % 4))["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-20:]) < 0.8 * np.mean(losses[:20]), losses


@pytest.mark.parametrize("sampler, evaluations", [("euler", 10), ("heun", 20), ("auto", 10)])
def test_samples_have_zero_centre_of_mass_and_count_evaluations(sampler, evaluations):
    _, model = tiny_setup("flow_matching", zero_mean_features=True)
    model.set_truncation({"t_star": 60, "v_hat": {"pos": 2.0, "h": 0.0075}})
    output, batch = model.sample(torch.tensor([5, 8, 3]), sampler, stride=6, generator=torch.Generator().manual_seed(0))
    assert output.pos.shape == (16, 3) and output.atom_types.shape == (16,)
    centres = output.pos - remove_mean(output.pos, batch)
    assert float(centres.abs().max()) <= 1e-6 * max(1.0, float(output.pos.abs().max()))
    assert output.num_evaluations == evaluations
    with pytest.raises(ValueError, match="unknown sampler 'ancestral' for flow_matching"):
        model.sample(torch.tensor([3]), "ancestral")


def test_callback_finds_t_star_on_the_path_and_caches_it_under_the_backbone(tmp_path):
    found = {}
    for backbone in ("flow_matching", "edm"):
        torch.manual_seed(0)
        datamodule, model = tiny_setup(backbone, zero_mean_features=True)
        callback = GaussianityCallback("auto", cache_dir=tmp_path, grid_step=10, dataset_molecules=64, workers=1)
        trainer = quiet_trainer(
            max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[callback], default_root_dir=tmp_path
        )
        trainer.fit(model, datamodule=datamodule)
        assert model.t_max == model.hparams.gaga["t_star"] == callback.result.truncation_step(100)
        assert np.isfinite(float(trainer.callback_metrics["val/nll"]))
        found[backbone] = model.hparams.gaga["t_star"]
    assert len(list(tmp_path.glob("tstar_*.json"))) == 2  # one cache entry per backbone (paths differ)

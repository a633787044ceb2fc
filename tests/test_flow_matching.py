"""Flow matching (EquiFM's hybrid path and the linear one) with GAGA: per-block path marginals against Monte Carlo,
targets against the path's derivative, learned and analytic velocities, ODE sampling, the ODE density against a
closed form, the OT coupling against brute force, GAGA's refusal of the coupling, training, sampling and T*."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gaga.callbacks.gaussianity import GaussianityCallback
from gaga.data.elements import QM9_ATOMS
from gaga.diffusion.flow_matching import equivariant_ot, ode_nll, ot_couple, velocity_loss
from gaga.diffusion.flow_path import FlowPath, LinearPath
from gaga.diffusion.forward import StartGaussian, remove_mean
from gaga.diffusion.samplers import Adaptive, Chain, Euler, Heun, run
from gaga.gaussianity import FEATURES, POSITIONS, molecule_blocks
from tests.conftest import quiet_trainer, tiny_setup

HYBRID = {"_target_": "gaga.diffusion.flow_path.FlowPath", "timesteps": 1000, "kind": "hybrid", "sigma_min": 1e-4}

SIGMA2 = 0.25  # variance of the toy data


def _per_dof_variance(values: np.ndarray, offsets: np.ndarray) -> float:
    """Mean square per degree of freedom of per-molecule zero-meaned rows: sum ||v||^2 / sum (N - 1) * width."""
    counts = np.diff(offsets)
    return float((values**2).sum() / ((counts - 1).sum() * values.shape[1]))


def _zero_mean_noise(rng, shape, offsets):
    counts = np.diff(offsets)
    noise = rng.standard_normal(shape)
    return noise - np.repeat(np.add.reduceat(noise, offsets[:-1]) / counts[:, None], counts, axis=0)


def _equifm_coefficients(block: str, t: float, sigma_min: float = 1e-4) -> tuple[float, float]:
    """EquiFM's (a_t, b_t), written out: coordinates linear, features alpha = exp(-(9.95 t^2 + 0.1 t) / 2)."""
    if block == POSITIONS:
        return 1 - t, sigma_min + (1 - sigma_min) * t
    alpha = math.exp(-0.5 * (9.95 * t**2 + 0.1 * t))
    return alpha, math.sqrt(1 - alpha**2)


@pytest.mark.parametrize("kind", ["linear", "hybrid"])
@pytest.mark.parametrize("step", [100, 300, 550, 800])
def test_path_variance_matches_the_closed_form_on_qm9(qm9_sample, step, kind):
    """z_t = a x + b eps of real molecules (per block: EquiFM's coefficients, written out) has the model's
    closed-form variance s^2 (alpha_bar v_hat + 1 - alpha_bar) per degree of freedom (Monte Carlo, within 2 %)."""
    schedule = HYBRID if kind == "hybrid" else {"_target_": "gaga.diffusion.flow_path.LinearPath", "timesteps": 1000}
    _, model = tiny_setup("flow_matching", zero_mean_features=True, schedule=schedule)
    blocks, offsets = molecule_blocks(qm9_sample, QM9_ATOMS)
    v_hat = {
        "pos": _per_dof_variance(blocks["positions"], offsets),
        "h": _per_dof_variance(blocks["features"], offsets),
    }
    model.set_truncation({"t_star": step, "v_hat": v_hat})
    rng, t = np.random.default_rng(step), step / 1000
    measured = []
    for block in (POSITIONS, FEATURES):
        a, b = _equifm_coefficients(block, t) if kind == "hybrid" else (1 - t, t)
        values = blocks[block]
        measured.append(_per_dof_variance(a * values + b * _zero_mean_noise(rng, values.shape, offsets), offsets))
    start = model.truncation.start_gaussian(step)
    np.testing.assert_allclose([start.variance_pos, start.variance_h], measured, rtol=0.02)


@pytest.mark.parametrize("step", [200, 550])
def test_hybrid_path_with_kept_features_matches_the_closed_form_per_column(qm9_sample, step):
    """Features that keep their mean (gaga.features=kept) on the variance-preserving path: each column of z_t has
    the closed form's mean and variance (Monte Carlo over atoms), and a draw of the start Gaussian matches both."""
    _, model = tiny_setup("flow_matching", schedule=HYBRID)
    blocks, offsets = molecule_blocks(qm9_sample, QM9_ATOMS, center_features=False)
    h = blocks["features"]
    model.set_truncation(
        {"t_star": step, "v_hat": {"pos": 1.0, "h": h.var(axis=0).tolist()}, "mean": {"h": h.mean(axis=0).tolist()}}
    )
    a, b = _equifm_coefficients(FEATURES, step / 1000)
    z = a * h + b * np.random.default_rng(step).standard_normal(h.shape)
    start = model.truncation.start_gaussian(step)
    np.testing.assert_allclose(start.mean_h.numpy(), z.mean(axis=0), atol=0.02)
    np.testing.assert_allclose(start.variance_h.numpy(), z.var(axis=0), rtol=0.03)
    counts = torch.from_numpy(np.diff(offsets))
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    generator = torch.Generator().manual_seed(0)
    _, draw = model.truncation.draw(batch, 5, (POSITIONS,), len(counts), generator, step)  # what sample() starts from
    np.testing.assert_allclose(draw.mean(0).numpy(), z.mean(axis=0), atol=0.03)
    np.testing.assert_allclose(draw.var(0).numpy(), z.var(axis=0), rtol=0.05)


@pytest.mark.parametrize("kind", ["linear", "hybrid"])
@pytest.mark.parametrize("t", [0.1, 0.4, 0.7, 0.95])
def test_each_blocks_target_turned_into_a_velocity_is_the_paths_derivative(kind, t):
    """velocity(target(x_0, eps, z_t, t)) = d z_t / dt by central differences of EquiFM's written-out coefficients
    (features on the hybrid path: alpha x_0 - alpha^2 z_t times M_t = -beta / (2 (1 - e^-T)), its 1e-5 aside)."""
    path = FlowPath(1000, kind)
    generator = torch.Generator().manual_seed(3)
    x0, eps = (torch.randn(64, 5, generator=generator, dtype=torch.float64) for _ in range(2))
    time = torch.full((64, 1), t, dtype=torch.float64)
    for block in (POSITIONS, FEATURES):

        def z(s, block=block):
            a, b = _equifm_coefficients(block, s) if kind == "hybrid" else (1 - s, 1e-4 + (1 - 1e-4) * s)
            return a * x0 + b * eps

        derivative = (z(t + 1e-6) - z(t - 1e-6)) / 2e-6
        z_t = path.noised(x0, eps, time, block)
        torch.testing.assert_close(z_t, z(t))
        rule = path.blocks[block]
        torch.testing.assert_close(
            rule.velocity(rule.target(x0, eps, z_t, time), z_t, time), derivative, rtol=1e-3, atol=1e-6
        )


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


def _optimal_output_gain(kind: str, t: torch.Tensor) -> torch.Tensor:
    """The loss minimiser's output gain on the features of x ~ N(0, s2): the linear path's E[eps - x | z_t] / z_t, or
    on EquiFM's VP path E[alpha x - alpha^2 z_t | z_t] / z_t = alpha^2 s2 / (alpha^2 s2 + 1 - alpha^2) - alpha^2
    (alpha written out: exp(-(9.95 t^2 + 0.1 t) / 2))."""
    if kind == "linear":
        return _analytic_gain(t)
    alpha2 = torch.exp(-(9.95 * t**2 + 0.1 * t))
    return alpha2 * SIGMA2 / (alpha2 * SIGMA2 + 1 - alpha2) - alpha2


def test_learned_velocity_of_a_gaussian_matches_the_analytic_velocity():
    torch.manual_seed(0)
    field, generator = GainField(), torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(1500):
        pos, h, batch = _toy_batch(512, generator)
        noise = (torch.zeros_like(pos), torch.randn(h.shape, generator=generator))
        t = torch.rand(len(batch), generator=generator) * 0.98 + 0.01
        loss = velocity_loss(field, LinearPath(), pos, h, noise, t, batch, len(batch)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    times = torch.tensor([[0.2], [0.5], [0.8]])
    with torch.no_grad():
        np.testing.assert_allclose(field.gain(times).numpy(), _analytic_gain(times).numpy(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("kind", ["linear", "hybrid"])
@pytest.mark.parametrize("time", [0.1, 0.2, 0.5, 0.8])
def test_the_velocity_loss_is_minimised_by_the_posterior_mean_target(kind, time):
    """At a fixed t, the output gain g minimising the velocity loss on x ~ N(0, s2) (features) is the closed form
    (the hybrid path: EquiFM's reparameterised target alpha x - alpha^2 z_t)."""
    path = LinearPath() if kind == "linear" else FlowPath(1000, "hybrid")
    gain, generator = torch.zeros((), requires_grad=True), torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam([gain], lr=0.02)
    for _ in range(400):
        pos, h, batch = _toy_batch(4096, generator)
        noise = (torch.zeros_like(pos), torch.randn(h.shape, generator=generator))
        t = torch.full((len(batch),), time)
        loss = velocity_loss(lambda p, q, s, b: (p, q * gain), path, pos, h, noise, t, batch, len(batch)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(gain) == pytest.approx(float(_optimal_output_gain(kind, torch.tensor(time))), abs=0.02)


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

    pos, start_step = torch.zeros(n, 3, dtype=torch.float64), round(t_start * 1000)
    chain = Chain(analytic, LinearPath(1000), batch)  # one atom per molecule: only the (zero) positions projected
    if method == "adaptive":
        pytest.importorskip("torchdiffeq")  # a core dependency since dopri5 became the default sampler
        final = run(Adaptive(), chain, lambda final: final, pos, h, Adaptive().steps(start_step, 1000))
        h_0, evaluations = final.h, final.num_evaluations
        assert 6 <= evaluations < 500  # dopri5: six evaluations a step, a handful of steps on this smooth field
    else:
        sampler = {"euler": Euler, "heun": Heun}[method](start_step // (200 if method == "euler" else 50))
        times = sampler.steps(start_step, 1000)
        final = run(sampler, chain, lambda final: final, pos, h, times)
        h_0, evaluations = final.h, final.num_evaluations
        assert evaluations == (len(times) - 1) * (2 if method == "heun" else 1)
    assert float(h_0.var()) == pytest.approx(SIGMA2, rel=0.03) and abs(float(h_0.mean())) < 0.01


def _exact_nll(x: torch.Tensor, h: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """-log N(x; 0, SIGMA2) on the zero-CoM subspace ((N - 1) 3 dims) and of free features (N F dims)."""
    counts = torch.bincount(batch, minlength=num_graphs).double()
    dims = (counts - 1) * 3 + counts * h.shape[1]
    squares = torch.zeros(num_graphs, dtype=torch.float64).index_add_(0, batch, (x**2).sum(1) + (h**2).sum(1))
    return 0.5 * squares / SIGMA2 + 0.5 * dims * math.log(2 * math.pi * SIGMA2)


@pytest.mark.parametrize("t_end", [1.0, 0.55])
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_ode_nll_of_gaussian_data_is_the_closed_form_density(divergence, t_end):
    """Data N(0, SIGMA2) (zero-CoM coordinates, free features) under its exact linear velocity on the linear path:
    ode_nll is -log N(x; 0, SIGMA2) (exact divergence: per molecule; Hutchinson: unbiased, on the mean)."""
    pytest.importorskip("torchdiffeq")
    generator = torch.Generator().manual_seed(5)
    sizes = torch.randint(3, 8, (64 if divergence == "exact" else 400,), generator=generator)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    x = remove_mean(torch.randn(len(batch), 3, generator=generator, dtype=torch.float64), batch) * SIGMA2**0.5
    h = torch.randn(len(batch), 2, generator=generator, dtype=torch.float64) * SIGMA2**0.5

    def exact_velocity(pos, h, t, batch):
        gain = _analytic_gain(t[batch, None].to(pos))
        return pos * gain, h * gain

    prior = (1 - t_end) ** 2 * SIGMA2 + t_end**2
    nll = ode_nll(
        exact_velocity,
        x,
        h,
        batch,
        len(sizes),
        t_end,
        StartGaussian(round(t_end * 100), prior, prior),
        False,
        generator,
        rtol=1e-7,
        atol=1e-7,
        divergence=divergence,
    )
    expected = _exact_nll(x, h, batch, len(sizes))
    if divergence == "exact":
        torch.testing.assert_close(nll, expected, rtol=1e-5, atol=1e-4)
    else:
        assert float(nll.mean()) == pytest.approx(float(expected.mean()), rel=0.02)


def _brute_force_cost(x: np.ndarray, noise: np.ndarray, rotate: bool = True) -> float:
    """min over all permutations (and, with `rotate`, their optimal rotation by scipy) of sum ||x_i - R eps_pi(i)||^2"""
    best = math.inf
    for order in itertools.permutations(range(len(x))):
        permuted = noise[list(order)]
        cost = float(Rotation.align_vectors(x, permuted)[1]) ** 2 if rotate else float(((x - permuted) ** 2).sum())
        best = min(best, cost)
    return best


def test_ot_coupling_against_brute_force_on_five_atom_molecules():
    """EquiFM's coupling (ICP from the unrotated assignment, then one assignment) against all 120 permutations: never
    below the global optimum over permutations x rotations, never above the best unrotated assignment (where ICP
    starts), and its final assignment is the best permutation for its rotation (ICP is a local search)."""
    rng = np.random.default_rng(4)
    found, best, unrotated = [], [], []
    for _ in range(30):
        x = rng.standard_normal((5, 3)) * 1.2
        noise = rng.standard_normal((5, 3))
        x, noise = x - x.mean(0), noise - noise.mean(0)
        coupled, _ = ot_couple(
            torch.from_numpy(x), torch.from_numpy(noise), torch.zeros(5, 1, dtype=torch.float64), torch.zeros(5).long()
        )
        found.append(float(((coupled.numpy() - x) ** 2).sum()))
        best.append(_brute_force_cost(x, noise))
        unrotated.append(_brute_force_cost(x, noise, rotate=False))
        _, rotation = equivariant_ot(x, noise)
        assert found[-1] == pytest.approx(_brute_force_cost(x, noise @ rotation.T, rotate=False), rel=1e-9)
    found, best, unrotated = np.array(found), np.array(best), np.array(unrotated)
    assert (found >= best - 1e-9).all() and (found <= unrotated + 1e-9).all()
    assert found.sum() < 0.9 * unrotated.sum(), (found.sum(), best.sum(), unrotated.sum())


def test_ot_coupling_is_permutation_and_rotation_consistent():
    generator = torch.Generator().manual_seed(2)
    sizes = torch.tensor([6, 9])
    batch = torch.repeat_interleave(torch.arange(2), sizes)
    pos = remove_mean(torch.randn(15, 3, generator=generator, dtype=torch.float64) * 1.5, batch)
    eps_pos = remove_mean(torch.randn(15, 3, generator=generator, dtype=torch.float64), batch)
    eps_h = torch.randn(15, 4, generator=generator, dtype=torch.float64)
    coupled_pos, coupled_h = ot_couple(pos, eps_pos, eps_h, batch)
    assert float(((coupled_pos - pos) ** 2).sum()) < float(((eps_pos - pos) ** 2).sum())
    # the coupled noise is a rotation of a permutation of the noise, its features following their rows
    torch.testing.assert_close(
        torch.linalg.norm(coupled_pos, dim=1).sort().values, torch.linalg.norm(eps_pos, dim=1).sort().values
    )
    rows = [int(torch.nonzero((eps_h == row).all(1))[0]) for row in coupled_h]
    torch.testing.assert_close(torch.linalg.norm(eps_pos[rows], dim=1), torch.linalg.norm(coupled_pos, dim=1))
    rotation = torch.from_numpy(Rotation.random(random_state=3).as_matrix())
    rotated_pos, rotated_h = ot_couple(pos @ rotation.T, eps_pos @ rotation.T, eps_h, batch)
    torch.testing.assert_close(rotated_pos, coupled_pos @ rotation.T)
    torch.testing.assert_close(rotated_h, coupled_h)
    permutation = torch.tensor([3, 2, 1, 0, 4, 5, 12, 7, 13, 9, 11, 10, 6, 8, 14])  # within each molecule
    permuted_pos, permuted_h = ot_couple(pos[permutation], eps_pos, eps_h, batch)
    torch.testing.assert_close(permuted_pos, coupled_pos[permutation])
    torch.testing.assert_close(permuted_h, coupled_h[permutation])


def test_gaga_refuses_the_ot_coupling_in_one_line():
    """Coupled noise depends on the data, so GAGA's closed form (noise independent of x_0) does not hold."""
    _, model = tiny_setup("flow_matching", zero_mean_features=True, ot_coupling=True)
    with pytest.raises(ValueError, match=r"^GAGA's closed form .* set backbone.ot_coupling=false or gaga.t_star=off$"):
        model.check_truncatable("centred")
    callback = GaussianityCallback("auto", cache_dir=None, workers=1)
    with pytest.raises(ValueError, match="backbone.ot_coupling=false"):
        callback.setup(quiet_trainer(max_epochs=1), model, "fit")


@pytest.mark.parametrize("ot_coupling, kind", [(False, "linear"), (True, "linear"), (True, "hybrid")])
def test_a_few_training_steps_reduce_the_loss(ot_coupling, kind):
    torch.manual_seed(0)
    schedule = {**HYBRID, "timesteps": 100, "kind": kind}
    datamodule, model = tiny_setup("flow_matching", train=8, batch_size=8, ot_coupling=ot_coupling, schedule=schedule)
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


@pytest.mark.parametrize("sampler, evaluations", [("euler", 10), ("heun", 20), ("auto", None)])
@pytest.mark.parametrize("kind", ["linear", "hybrid"])
def test_samples_have_zero_centre_of_mass_and_count_evaluations(sampler, evaluations, kind):
    """auto is dopri5 (EquiFM's sampler), its NFE counted: at least one step of 6 evaluations."""
    schedule = {**HYBRID, "timesteps": 100, "kind": kind}
    _, model = tiny_setup("flow_matching", zero_mean_features=True, schedule=schedule)
    model.set_truncation({"t_star": 60, "v_hat": {"pos": 2.0, "h": 0.0075}})
    stride = 6 if sampler != "auto" else 1  # dopri5 takes its own steps: a stride is refused
    output, batch = model.sample(torch.tensor([5, 8, 3]), sampler, stride, generator=torch.Generator().manual_seed(0))
    assert output.pos.shape == (16, 3) and output.atom_types.shape == (16,)
    centres = output.pos - remove_mean(output.pos, batch)
    assert float(centres.abs().max()) <= 1e-6 * max(1.0, float(output.pos.abs().max()))
    assert output.num_evaluations == evaluations if evaluations else output.num_evaluations >= 6
    with pytest.raises(ValueError, match="unknown sampler 'ancestral' for flow_matching"):
        model.sample(torch.tensor([3]), "ancestral")


def test_the_adaptive_sampler_takes_the_models_tolerance():
    _, model = tiny_setup("flow_matching", ode_tolerance=1e-3)
    assert model.build_sampler() == Adaptive(rtol=1e-3, atol=1e-3)
    assert model.build_sampler("heun", stride=5) == Heun(stride=5)


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
        assert model.truncation.start_step == callback.result.truncation_step(100)
        metric = "val/loss" if backbone == "flow_matching" else "val/nll"  # flow matching: the velocity loss
        assert np.isfinite(float(trainer.callback_metrics[metric]))
        found[backbone] = model.truncation.start_step
    assert len(list(tmp_path.glob("tstar_*.json"))) == 2  # one cache entry per backbone (paths differ)


def test_hybrid_path_gets_each_blocks_t_star_from_the_callback_and_logs_the_opt_in_density(tmp_path):
    """On the hybrid path the evaluator takes one alpha_bar per block; val/density_nll (ODE density) only on request."""
    pytest.importorskip("torchdiffeq")
    torch.manual_seed(0)
    datamodule, model = tiny_setup(
        "flow_matching", zero_mean_features=True, schedule={**HYBRID, "timesteps": 100}, ode_likelihood=True
    )
    callback = GaussianityCallback("auto", cache_dir=tmp_path, grid_step=10, dataset_molecules=64, workers=1)
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[callback], default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=datamodule)
    assert model.truncation.start_step == callback.result.truncation_step(100)
    assert {"val/loss", "val/density_nll"} <= set(
        trainer.callback_metrics
    ) and "val/nll" not in trainer.callback_metrics


def test_evaluator_with_one_alpha_bar_per_block_tests_each_block_on_its_own(sample_blocks):
    """find_t_star on the hybrid path's {block: alpha_bar} gives each block the T* that the same evaluation gives it
    when every block follows that block's alpha_bar."""
    from gaga.gaussianity import GaussianitySettings, find_t_star

    blocks, offsets = sample_blocks
    alpha_bar = FlowPath(100, "hybrid").alpha_bar()
    settings = GaussianitySettings(
        grid_step=10, dataset_molecules=200, dep_null_draws=2, workers=1, zero_com_blocks=(POSITIONS, FEATURES)
    )
    both = find_t_star(blocks, offsets, alpha_bar, settings, progress=False)
    for block in (POSITIONS, FEATURES):
        alone = find_t_star(blocks, offsets, alpha_bar[block], settings, progress=False)
        assert both.t_star_by_block[block] == alone.t_star_by_block[block]
        assert both.t_ds[block] == alone.t_ds[block] and both.t_id[block] == alone.t_id[block]
    assert both.t_ds[FEATURES] < both.t_ds[POSITIONS]  # the VP path noises the features faster


def test_the_feature_path_holds_its_t_0_field_where_dopri5_steps_past_the_end():
    """dopri5's last step evaluates at t < 0, where EquiFM's M_t has a pole (t = -1e-4) and b is imaginary."""
    block = FlowPath().blocks[FEATURES]
    t = torch.tensor([-0.05, -1e-4, 0.0], dtype=torch.float64)
    torch.testing.assert_close(block.multiplier(t), block.multiplier(torch.zeros(3, dtype=torch.float64)))
    assert torch.isfinite(torch.stack(block.coefficients(t))).all()


def test_the_paths_block_names_are_the_evaluators():
    from gaga.diffusion import flow_path

    assert (flow_path.POSITIONS, flow_path.FEATURES) == (POSITIONS, FEATURES)
    assert set(FlowPath().alpha_bar()) == {POSITIONS, FEATURES}


def test_checkpoints_without_a_path_setting_load_as_the_linear_path():
    """Checkpoints written before the path kinds: LinearPath (or no schedule), nll_steps, no loss settings."""
    _, model = tiny_setup("flow_matching", schedule=None, nll_steps=20)
    assert isinstance(model.schedule, LinearPath) and model.schedule.kind == "linear"
    assert model.schedule.name == "linear_path" and model.schedule.precision == 0.0
    with pytest.raises(ValueError, match="validation_metric=val/density_nll needs backbone.ode_likelihood=true"):
        tiny_setup("flow_matching", validation_metric="val/density_nll")
    with pytest.raises(ValueError, match="backbone.schedule.kind='vp': use one of"):
        FlowPath(100, "vp")


def test_flow_matching_presets_rank_runs_by_the_velocity_loss_and_edm_by_its_nll(tmp_path):
    """Checkpoints and Optuna read the backbone's validation metric; EquiFM's preset as released, GAGA's without
    the coupling."""
    from gaga.config import compose

    for overrides, metric in (
        (["experiment=equifm_qm9"], "val/loss"),
        (["experiment=edm_qm9"], "val/nll"),
        (["experiment=geoldm_qm9"], "val/nll"),
        (["backbone=flow_matching", "hparams_search=optuna"], "val/loss"),
    ):
        cfg = compose("train", overrides, output_dir=str(tmp_path))
        assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric == metric, overrides
    cfg = compose("train", ["experiment=equifm_qm9"], output_dir=str(tmp_path))
    assert (cfg.backbone.schedule.kind, cfg.backbone.ot_coupling, cfg.backbone.normalizer.include_charges) == (
        "hybrid",
        True,
        True,
    )
    assert cfg.backbone.loss_normalisation == "atom_mean" and cfg.backbone.ode_tolerance == 1e-4
    gaga = compose("train", ["experiment=equifm_gaga_qm9"], output_dir=str(tmp_path))
    assert gaga.backbone.ot_coupling is False and gaga.backbone.schedule.kind == "hybrid"
    from gaga.checks import check_settings

    check_settings(cfg)  # the coupling without GAGA, and GAGA without it, pass the settings rules
    check_settings(gaga)


def test_a_checkpoint_written_before_the_path_settings_loads_as_the_linear_path_and_samples(tmp_path):
    """A checkpoint file whose hyperparameters predate the path kinds, the loss and ODE settings (as written by
    earlier versions: LinearPath, nll_steps) loads as the linear path with the defaults and samples."""
    from gaga.models.checkpoints import load_model

    datamodule, model = tiny_setup("flow_matching", train=8, batch_size=8)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    for key in ("loss_normalisation", "ode_tolerance", "ode_likelihood", "validation_metric"):
        hparams.pop(key)
    hparams["schedule"] = {"_target_": "gaga.diffusion.flow_path.LinearPath", "timesteps": 100}
    hparams["nll_steps"] = 20
    torch.save(checkpoint, path)
    loaded = load_model(path)
    assert isinstance(loaded.schedule, LinearPath) and loaded.schedule.kind == "linear"
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    output, _ = loaded.sample(torch.tensor([4, 6]), "euler", stride=10, generator=torch.Generator().manual_seed(0))
    assert output.num_evaluations == 10 and torch.isfinite(output.pos).all()


def test_a_pooled_variance_is_refused_on_a_path_with_one_alpha_bar_per_block(sample_blocks):
    """The paper's and the reference's pooled v_hat cannot follow two blocks moving at different rates."""
    from gaga.gaussianity import GaussianitySettings, find_t_star

    blocks, offsets = sample_blocks
    settings = GaussianitySettings(variance="paper", dataset_molecules=50, grid_step=50, workers=1)
    with pytest.raises(ValueError, match=r"each block its own alpha_bar .* not 'all': use gaga.variance=exact"):
        find_t_star(blocks, offsets, FlowPath(100, "hybrid").alpha_bar(), settings, progress=False)

"""GeoLDM on real QM9 subsets: autoencoder equivariance, reconstruction, the joint objective, samples, T* on latents."""

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy.spatial.transform import Rotation

from gaga.callbacks.gaussianity import GaussianityCallback
from gaga.diffusion.forward import remove_mean
from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import find_t_star
from gaga.models.base import weights_digest
from gaga.nn import EquivariantDecoder, EquivariantEncoder
from tests.conftest import quiet_trainer, tiny_setup

SIZES = torch.tensor([5, 9, 3])
BATCH = torch.repeat_interleave(torch.arange(3), SIZES)


def _random_molecules(num_features: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    pos = remove_mean(torch.randn(len(BATCH), 3, generator=generator, dtype=torch.float64) * 1.5, BATCH)
    return pos, torch.randn(len(BATCH), num_features, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("module", ["encoder", "decoder"])
def test_autoencoder_is_e3_equivariant(module):
    """Rotating and translating the input rotates the output coordinates and leaves the features unchanged."""
    torch.manual_seed(0)
    if module == "encoder":
        net, width = EquivariantEncoder(num_features=6, latent_nf=2, hidden_nf=32, n_layers=1), 6
    else:
        net, width = EquivariantDecoder(num_features=6, latent_nf=2, hidden_nf=32, n_layers=3), 2
    net = net.double()
    pos, h = _random_molecules(width)
    rotation = torch.from_numpy(Rotation.random(random_state=1).as_matrix())
    shift = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    pos_out, h_out = net(pos, h, BATCH)
    pos_moved, h_moved = net(pos @ rotation.T + shift, h, BATCH)
    torch.testing.assert_close(pos_moved, pos_out @ rotation.T)
    torch.testing.assert_close(h_moved, h_out)
    torch.testing.assert_close(remove_mean(pos_out, BATCH), pos_out)  # zero centre of mass


def _train(model, datamodule, steps: int) -> list[float]:
    optimizer = model.configure_optimizers()
    losses, step = [], 0
    while step < steps:
        for batch in datamodule.train_dataloader():
            terms = model.training_terms(batch, torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            terms["loss"].mean().backward()
            optimizer.step()
            losses.append(terms["loss"].mean().item())
            step += 1
            if step == steps:
                break
    return losses


def test_decoder_reconstructs_atom_types_from_fixed_encoder_latents():
    """After a short joint run (encoder fixed) the decoder recovers > 95 % of held-out atom types."""
    torch.manual_seed(0)
    decoder = {"_target_": "gaga.nn.EquivariantDecoder", "hidden_nf": 32, "n_layers": 1}
    datamodule, model = tiny_setup("geoldm", train=256, batch_size=32, optimizer={"lr": 1e-3}, decoder=decoder)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    _train(model, datamodule, steps=1500)
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[name]), f"encoder weight {name} changed"
    correct = total = 0
    with torch.no_grad():
        for batch in datamodule.ordered_loader("valid"):
            z_pos, z_h = model.sampled_latents(batch, torch.Generator().manual_seed(0))
            _, logits = model.decoder(z_pos, z_h, batch.batch)
            correct += int((logits[:, : batch.x.shape[1]].argmax(1) == batch.x.argmax(1)).sum())
            total += batch.x.shape[0]
    assert correct / total > 0.95, correct / total


def test_joint_objective_is_finite_and_decreases():
    torch.manual_seed(0)
    datamodule, model = tiny_setup("geoldm", train=16, batch_size=16)
    losses = _train(model, datamodule, steps=40)
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-10:]) < sum(losses[:10]), losses


@pytest.mark.parametrize("zero_mean_features", [False, True])
def test_samples_have_zero_centre_of_mass_and_valid_shapes(zero_mean_features):
    _, model = tiny_setup("geoldm", zero_mean_features=zero_mean_features)
    sizes = torch.tensor([4, 11, 7])
    output, batch = model.sample(sizes, stride=10, generator=torch.Generator().manual_seed(0))
    assert output.pos.shape == (22, 3) and output.atom_types.shape == (22,) and batch.shape == (22,)
    assert int(output.atom_types.min()) >= 0 and int(output.atom_types.max()) < len(
        model.hparams.dataset["atom_symbols"]
    )
    centres = output.pos - remove_mean(output.pos, batch)  # each atom's molecule mean, float32 rounding aside
    assert float(centres.abs().max()) <= 1e-6 * max(1.0, float(output.pos.abs().max()))
    assert output.num_evaluations == 100 // 10 + 1


def _fit_with_gaga(backbone: str, tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    datamodule, model = tiny_setup(backbone, zero_mean_features=True)
    callback = GaussianityCallback(
        "auto", cache_dir=tmp_path / "cache", grid_step=10, dataset_molecules=64, eps_ds=0.05, eps_dep=0.05, workers=1
    )
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[callback], default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=datamodule)
    return callback, model


def cache_entries(folder) -> list[str]:
    """The T* cache's entries (each JSON has its digest and lock files beside it)."""
    return sorted(p.name for p in folder.glob("tstar_*.json"))


def test_callback_finds_t_star_on_latents_and_caches_it_under_the_backbone(tmp_path):
    callback, model = _fit_with_gaga("geoldm", tmp_path)
    t_star = model.truncation.start_step
    blocks, offsets = model.gaussianity_data(model.trainer.datamodule.ordered_loader("train"), progress=False)
    assert blocks["features"].shape[1] == model.hparams.latent_nf
    # T* is the evaluator's on the latents, not on the atoms (whose features are one-hot / 4)
    settings = callback.evaluator_settings(model)
    direct = find_t_star(blocks, offsets, model.schedule.alpha_bar(), settings, False)
    assert direct.t_star == callback.result.t_star and direct.curves == callback.result.curves
    assert t_star == model.truncation.start_step == direct.truncation_step(model.schedule.timesteps)
    # v_hat of the latent features by hand: each molecule's unbiased variance over its value on zero-mean noise
    sizes = np.diff(offsets)
    molecules = np.split(blocks["features"], offsets[1:-1])
    variance = np.mean([np.var(m.ravel(), ddof=1) for m in molecules])
    noise = np.mean([m.shape[1] * (n - 1) / (m.size - 1) for m, n in zip(molecules, sizes, strict=True)])
    assert model.truncation.record()["v_hat"]["h"] == pytest.approx(variance / noise, rel=1e-9)
    assert len(cache_entries(tmp_path / "cache")) == 1
    _fit_with_gaga("geoldm", tmp_path, seed=1)  # another encoder: other latents, another cache entry
    _fit_with_gaga("edm", tmp_path)
    assert len(cache_entries(tmp_path / "cache")) == 3
    again, _ = _fit_with_gaga("geoldm", tmp_path)  # the same encoder: a cache hit
    assert again.result.t_star == callback.result.t_star and len(cache_entries(tmp_path / "cache")) == 3


def test_two_stage_option_trains_the_encoder_then_freezes_it_and_finds_t_star_on_the_final_latents(tmp_path):
    torch.manual_seed(0)
    datamodule, model = tiny_setup("geoldm", zero_mean_features=True, autoencoder_epochs=1)
    initial = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    initial_digest = weights_digest(model.encoder)
    seen = {}

    class Watch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen[f"start{trainer.current_epoch}"] = {k: v.clone() for k, v in pl_module.encoder.state_dict().items()}

        def on_train_epoch_end(self, trainer, pl_module):  # runs before the module's own epoch-end hook
            seen[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.encoder.state_dict().items()}
            seen[f"ema{trainer.current_epoch}"] = {k: v.clone() for k, v in pl_module.ema_encoder.state_dict().items()}
            seen[f"gaga{trainer.current_epoch}"] = pl_module.truncation.record()
            seen[f"loss{trainer.current_epoch}"] = set(trainer.callback_metrics)

    gaussianity = GaussianityCallback(
        "auto", cache_dir=tmp_path / "cache", grid_step=10, dataset_molecules=64, eps_ds=0.05, eps_dep=0.05, workers=1
    )
    trainer = quiet_trainer(
        max_epochs=2, limit_val_batches=1, callbacks=[gaussianity, Watch()], default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=datamodule)
    assert any(not torch.equal(seen[0][k], initial[k]) for k in initial), "the first stage must train the encoder"
    # the second stage starts from the first stage's EMA encoder (released: generative_model_ema.npy), frozen
    assert all(torch.equal(seen["start1"][k], seen["ema0"][k]) for k in initial), "stage 2 must load the EMA encoder"
    assert any(not torch.equal(seen["ema0"][k], seen[0][k]) for k in initial)
    assert all(torch.equal(seen[1][k], seen["start1"][k]) for k in initial), "the encoder must be frozen after it"
    assert seen["gaga0"] is None and seen["gaga1"]["t_star"] >= 1  # T* only once the encoder is final
    assert "train/kl" in seen["loss0"] and "train/l2" in seen["loss1"]
    identity = model.gaussianity_identity()
    assert (
        len(cache_entries(tmp_path / "cache")) == 1 and identity["encoder"] != initial_digest
    )  # cached under the trained encoder


# --- the released units and loss weights, against hand computations (no reference code needed) ---------------


class _Zeros(torch.nn.Module):
    """A stand-in network whose outputs are zeros of the given feature width (dynamics or decoder)."""

    def __init__(self, width: int | None = None):
        super().__init__()
        self.width, self.anchor = width, torch.nn.Parameter(torch.zeros(()))

    def forward(self, pos, h, *rest):
        width = h.shape[1] if self.width is None else self.width
        return torch.zeros_like(pos) + self.anchor, torch.zeros(h.shape[0], width, dtype=h.dtype) + self.anchor


def _charged_model(**options):
    torch.manual_seed(0)
    options = {"ema_decay": 0.0, "normalizer": {"include_charges": True}, "train": 16, **options}
    datamodule, model = tiny_setup("geoldm", **options)
    return next(iter(datamodule.train_dataloader())), model


@pytest.mark.parametrize("encoder_inputs, onehot_scale, charge_scale", [("raw", 1.0, 1.0), ("normalised", 4.0, 10.0)])
def test_encoder_reads_the_atoms_in_the_units_asked_for(encoder_inputs, onehot_scale, charge_scale):
    """raw (the released GeoLDM, the default): angstrom, one-hot 0/1, charge Z; normalised: one-hot / 4, Z / 10."""
    batch, model = _charged_model(encoder_inputs=encoder_inputs)
    seen = []
    model.encoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs))
    model.diffusion_state(batch)
    pos, h = seen[0][:2]
    means = torch.stack([batch.pos[batch.batch == i].mean(0) for i in range(batch.num_graphs)])
    torch.testing.assert_close(pos, batch.pos - means[batch.batch])
    torch.testing.assert_close(h[:, :-1], batch.x.float() / onehot_scale)
    torch.testing.assert_close(h[:, -1], batch.charges.float().reshape(-1) / charge_scale)


def test_the_released_units_are_the_default():
    from gaga.config import compose

    cfg = compose("train", ["experiment=geoldm_qm9"])
    assert cfg.backbone.encoder_inputs == "raw" and cfg.backbone.autoencoder_sigma == 0.0032


def test_joint_loss_matches_a_hand_computation(monkeypatch):
    """With zero dynamics and decoder outputs: 0.5 ||eps||^2 / ((3 + L) N_max) + (||x||^2 + N log K + sum Z^2) /
    ((3 + F) N_max), per molecule: EDM's 0.5 at every t, the reconstruction in raw units (charge Z, not Z / 10)."""
    batch, model = _charged_model()
    num_types = batch.x.shape[1]
    model.net, model.decoder = _Zeros(), _Zeros(num_types + 1)
    import gaga.diffusion.losses as losses

    drawn = []
    original = losses.diffuse

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(losses, "diffuse", recording)
    terms = model.training_terms(batch, torch.Generator().manual_seed(0))
    _, _, eps_pos, eps_h = drawn[0]
    sizes = torch.bincount(batch.batch)
    n_max = float(sizes.max())
    eps_sq = torch.zeros(batch.num_graphs).index_add_(0, batch.batch, (eps_pos**2).sum(1) + (eps_h**2).sum(1))
    means = torch.stack([batch.pos[batch.batch == i].mean(0) for i in range(batch.num_graphs)])
    pos_sq = torch.zeros(batch.num_graphs).index_add_(0, batch.batch, ((batch.pos - means[batch.batch]) ** 2).sum(1))
    z_sq = torch.zeros(batch.num_graphs).index_add_(0, batch.batch, batch.charges.float().reshape(-1) ** 2)
    reconstruction = (pos_sq + sizes * math.log(num_types) + z_sq) / ((3 + num_types + 1) * n_max)
    expected = 0.5 * eps_sq / ((3 + 1) * n_max) + reconstruction
    torch.testing.assert_close(terms["reconstruction"], reconstruction)
    torch.testing.assert_close(terms["loss"], expected)


def test_nll_holds_the_released_h_given_z0_constants():
    """GeoLDM's log_constants_p_h_given_z0: N * 3 * (0.5 gamma_0 + 0.5 log 2 pi), gamma_0 = log(sigma_0^2 / alpha_0^2),
    with 3 (not latent_nf) as released; it is part of the reported NLL."""
    batch, model = _charged_model()
    model.eval()
    with torch.no_grad():
        terms = model.nll_terms(batch, torch.Generator().manual_seed(0))
    alpha_bar_0 = float(NoiseSchedule("polynomial_2", 100, 1e-5).alpha_bar()[0])
    gamma_0 = math.log((1 - alpha_bar_0) / alpha_bar_0)
    expected = torch.bincount(batch.batch).double() * 3 * (0.5 * gamma_0 + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(terms["h_given_z0_constants"].double(), expected, rtol=1e-5, atol=1e-4)
    parts = sum(value for key, value in terms.items() if key != "nll")
    torch.testing.assert_close(terms["nll"], parts)


def test_first_stage_draws_the_latent_with_the_released_fixed_sigma(monkeypatch):
    """autoencoder_sigma 0.0032 (the default): z = posterior mean + 0.0032 * noise, whatever the encoder's own std."""
    batch, model = _charged_model(autoencoder_epochs=1)
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs))
    model.autoencoder_terms(batch, torch.Generator().manual_seed(0))
    pos, h = model.autoencoder_atoms(batch)
    mean_pos, mean_h, _, _ = model.encoder.posterior(pos, h, batch.batch)
    generator = torch.Generator().manual_seed(0)
    noise_pos = remove_mean(torch.randn(mean_pos.shape, generator=generator), batch.batch)
    noise_h = torch.randn(mean_h.shape, generator=generator)
    torch.testing.assert_close(seen[0][0], remove_mean(mean_pos + 0.0032 * noise_pos, batch.batch))
    torch.testing.assert_close(seen[0][1], mean_h + 0.0032 * noise_h)


def test_checkpoint_without_encoder_inputs_loads_as_normalised(tmp_path):
    """Checkpoints written before the settings existed encoded normalised atoms (and drew the first stage's latent
    with the encoder's own std): sampling reads them so, and resuming one with the new defaults stops with a
    one-line message naming the key."""
    import gaga
    from gaga.models.checkpoints import load_model, plain

    _, model = _charged_model()
    hparams = plain(dict(model.hparams))
    del hparams["encoder_inputs"], hparams["autoencoder_sigma"]
    checkpoint = {
        "hyper_parameters": hparams,
        "state_dict": model.state_dict(),
        "backbone_target": "gaga.models.geoldm.GeoLDM",
        "gaga_version": gaga.__version__,
    }
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = load_model(tmp_path / "old.ckpt")
    assert loaded.hparams.encoder_inputs == "normalised" and loaded.autoencoder_units.onehot_scale == 4.0
    assert loaded.hparams.autoencoder_sigma is None  # the encoder's own posterior std, as before
    with pytest.raises(ValueError, match="backbone.encoder_inputs=normalised to resume"):
        model.on_load_checkpoint(checkpoint)


def test_two_stage_checkpoint_without_an_encoder_ema_loads():
    """Two-stage checkpoints written before the encoder had an EMA copy: the copy starts as the encoder."""
    _, model = tiny_setup("geoldm", autoencoder_epochs=1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("ema_encoder.")}
    with torch.no_grad():
        for parameter in model.ema_encoder.parameters():
            parameter.add_(1.0)
    model.load_state_dict(state)
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(model.ema_encoder.state_dict()[name], value), name

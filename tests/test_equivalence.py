"""gaga against the released EDM and GeoLDM code: the same weights, steps and noise in both, the same numbers out.

Each test loads one set of random weights into gaga's network and the released one, runs gaga while recording its
random draws (experiments/reference_code.py: NoiseTape), replays them to the released code on the same QM9
molecules (padded, with masks, as its loaders serve them) and compares, in float64: the network outputs, the
training loss and its gradients, the NLL and its terms, one ancestral reverse step, and the decoding. Skipped,
saying so, when experiments/edm_reference/ or experiments/geoldm_reference/ holds no checkout (CI has none);
`python experiments/equivalence.py` runs them all and writes experiments/results/equivalence.txt.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from gaga.config import REPO_ROOT
from gaga.diffusion.decoding import OneHotDecoder
from gaga.diffusion.forward import remove_mean
from gaga.diffusion.samplers import Ancestral, Chain, run
from tests.conftest import tiny_setup

_spec = importlib.util.spec_from_file_location("reference_code", REPO_ROOT / "experiments" / "reference_code.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

HIDDEN, LAYERS, LATENT_NF, T = 16, 2, 1, 1000
SCHEDULE = {"_target_": "gaga.diffusion.schedules.NoiseSchedule", "name": "polynomial_2", "timesteps": T}
NET = {"_target_": "gaga.nn.EGNNDynamics", "hidden_nf": HIDDEN, "n_layers": LAYERS}
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float64 both sides; a few float32 constants inside either
# the diffusion process both released models are built with: EDM's QM9 settings, charges included
RELEASED_PROCESS = {
    "n_dims": 3,
    "timesteps": T,
    "noise_schedule": "polynomial_2",
    "noise_precision": 1e-5,
    "loss_type": "l2",
    "norm_values": [1, 4, 10],
    "include_charges": True,
}

needs_edm = pytest.mark.skipif(not ref.available("edm"), reason=ref.skipped_note("edm"))
needs_geoldm = pytest.mark.skipif(not ref.available("geoldm"), reason=ref.skipped_note("geoldm"))


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), **TOLERANCE, msg=lambda m: f"{what}: {m}")


def _batch(datamodule):
    """The first validation batch, coordinates in float64 (gaga's features follow their dtype)."""
    batch = next(iter(datamodule.ordered_loader("valid")))
    batch.pos = batch.pos.double()
    return batch


def padding_cross_entropy(batch, num_types: int) -> torch.Tensor:
    """What the released reconstruction error adds per molecule and gaga leaves out on purpose: its cross-entropy
    runs over the padded atoms too (zero logits, so log K each), (N_max - N) * log K; constant in the weights."""
    num_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs)
    return (num_atoms.max() - num_atoms).double() * math.log(num_types)


def _gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def _compare_gradients(ours: torch.nn.Module, released: torch.nn.Module, what: str, latent_nf: int | None = None):
    expected = ref.gaga_state_dict(_gradients(released), latent_nf)
    actual = _gradients(ours)
    assert set(actual) == set(expected), f"{what}: gradient names differ"
    for name, value in actual.items():
        close(value, expected[name], f"{what} gradient {name}")


# --- EDM ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edm_pair():
    """(datamodule, gaga EDM, released EnVariationalDiffusion) with the released dynamics' random weights."""
    models, egnn_models = ref.import_released("edm", "equivariant_diffusion.en_diffusion", "egnn.models")
    torch.manual_seed(0)
    datamodule, ours = tiny_setup(
        "edm", net=NET, schedule=SCHEDULE, ema_decay=0.0, normalizer={"include_charges": True}, train=16
    )
    features = ours.normalizer.num_features(len(ours.hparams.dataset["atom_symbols"]))
    dynamics = egnn_models.EGNN_dynamics_QM9(in_node_nf=features + 1, **ref.egnn_options(HIDDEN, LAYERS))
    released = models.EnVariationalDiffusion(
        dynamics=dynamics,
        in_node_nf=features,
        **RELEASED_PROCESS,
    )
    ours.net.load_state_dict(ref.gaga_state_dict(dynamics.state_dict()))
    return datamodule, ours.double(), released.double()


def _edm_inputs(batch):
    node_mask, edges = ref.masks(batch.batch)
    x = ref.dense(remove_mean(batch.pos.double(), batch.batch), batch.batch)
    h = {
        "categorical": ref.dense(batch.x.double(), batch.batch),
        "integer": ref.dense(batch.charges.double().reshape(-1, 1), batch.batch),
    }
    return x, h, node_mask, edges


@needs_edm
def test_edm_denoiser(edm_pair):
    datamodule, ours, released = edm_pair
    batch = _batch(datamodule)
    pos, h = ours.normalised_atoms(batch)
    pos, h = pos.double(), h.double()
    t = torch.linspace(0.1, 0.9, batch.num_graphs, dtype=torch.float64)
    eps_pos, eps_h = ours.net(pos, h, t, batch.batch)
    node_mask, edges = ref.masks(batch.batch)
    xh = ref.dense(torch.cat([pos, h], dim=1), batch.batch)
    expected = released.phi(xh, t.reshape(-1, 1), node_mask, edges, None)
    close(ref.dense(torch.cat([eps_pos, eps_h], dim=1), batch.batch), expected, "EDM denoiser")


@needs_edm
def test_edm_training_loss_and_gradients(edm_pair):
    """gaga's l2 loss (with EDM's 0.5 for t > 0) equals the released training loss minus its parameter-free prior
    KL, molecule by molecule, and so do the gradients of the batch mean."""
    datamodule, ours, released = edm_pair
    batch = _batch(datamodule)
    ours.train(), released.train()
    tape = ref.NoiseTape(batch.batch)
    ours.zero_grad()
    with tape.record():
        terms = ours.training_terms(batch, torch.Generator().manual_seed(1))
    terms["loss"].mean().backward()
    x, h, node_mask, edges = _edm_inputs(batch)
    tape.wire(released, released.in_node_nf)
    released.zero_grad()
    with tape.steps():
        loss = released(x, h, node_mask, edges)
    tape.assert_used_up()
    with torch.no_grad():
        x_n, h_n, _ = released.normalize(x, h, node_mask)
        kl_prior = released.kl_prior(torch.cat([x_n, h_n["categorical"], h_n["integer"]], dim=2), node_mask)
    close(terms["loss"], loss - kl_prior, "EDM training loss")
    loss.mean().backward()
    _compare_gradients(ours.net, released.dynamics, "EDM")


@needs_edm
def test_edm_nll_terms(edm_pair):
    """gaga's NLL estimate equals the released validation NLL (which leaves -log p(N) to qm9/losses.py), and its
    prior KL and (N-1)*3 constants equal the released terms."""
    datamodule, ours, released = edm_pair
    batch = _batch(datamodule)
    ours.eval(), released.eval()
    tape = ref.NoiseTape(batch.batch)
    with torch.no_grad():
        with tape.record():
            terms = ours.nll_terms(batch, torch.Generator().manual_seed(2))
        x, h, node_mask, edges = _edm_inputs(batch)
        tape.wire(released, released.in_node_nf)
        with tape.steps():
            nll = released(x, h, node_mask, edges)
        tape.assert_used_up()
        x_n, h_n, _ = released.normalize(x, h, node_mask)
        kl_prior = released.kl_prior(torch.cat([x_n, h_n["categorical"], h_n["integer"]], dim=2), node_mask)
        constants = -released.log_constants_p_x_given_z0(x_n, node_mask)
    close(terms["nll"] - terms["num_atoms"], nll, "EDM NLL")
    # the prior KL is a difference of nearly equal numbers (sigma_T^2 = 1 - 1e-5): agreement to 1e-5 nats
    torch.testing.assert_close(terms["kl_prior"], kl_prior, rtol=0, atol=1e-5, msg=lambda m: f"EDM prior KL: {m}")
    close(terms["constants"], constants, "EDM (N-1)*3 constants")


@needs_edm
def test_edm_reverse_step_and_decoding(edm_pair):
    """One ancestral step from t = 1 to 0 and the final p(x, h | z_0): the same z_0, coordinates and types."""
    datamodule, ours, released = edm_pair
    batch = _batch(datamodule)
    ours.eval(), released.eval()
    generator = torch.Generator().manual_seed(3)
    pos, h = ours.normalised_atoms(batch)
    pos = remove_mean(
        pos.double() + 0.05 * torch.randn(pos.shape, generator=generator, dtype=torch.float64), batch.batch
    )
    h = h.double() + 0.05 * torch.randn(h.shape, generator=generator, dtype=torch.float64)
    output, z0_ours, z0, (x, h_out), node_mask, _ = _one_reverse_step(
        ours, OneHotDecoder(ours.normalizer), released, released.in_node_nf, pos, h, batch, generator
    )
    mask = node_mask.bool().squeeze(2)
    close(z0_ours, z0[mask], "EDM z_0 after one reverse step")
    close(output.pos, x[mask], "EDM decoded coordinates")
    assert torch.equal(output.atom_types, h_out["categorical"][mask].argmax(1)), "EDM decoded atom types"
    assert torch.equal(output.charges, h_out["integer"][mask].squeeze(1)), "EDM decoded charges"


def _one_reverse_step(ours, decode, released, width, pos, h, batch, generator):
    """Both models' ancestral step from t = 1 to 0 and p(x, h | z_0) on the same state and noise: (our output, our
    z_0, the released z_0, its (x, h) from p(x, h | z_0), node mask, edge mask)."""
    frames = []
    tape = ref.NoiseTape(batch.batch)
    with torch.no_grad():
        with tape.record():
            output = run(
                Ancestral(),
                Chain(ours.net, ours.schedule, batch.batch, generator=generator),
                decode,
                pos,
                h,
                Ancestral().steps(1, ours.schedule.timesteps),
                keep_frame=lambda step, p, f: frames.append((p.clone(), f.clone())),
            )
        node_mask, edges = ref.masks(batch.batch)
        tape.wire(released, width)
        z = ref.dense(torch.cat([pos, h], dim=1), batch.batch)
        s_array = torch.zeros(batch.num_graphs, 1, dtype=torch.float64)
        z0 = released.sample_p_zs_given_zt(s_array, s_array + 1 / T, z, node_mask, edges, None)
        decoded = released.sample_p_xh_given_z0(z0, node_mask, edges, None)
        tape.assert_used_up()
    return output, torch.cat(frames[-1], dim=1), z0, decoded, node_mask, edges


# --- GeoLDM -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def geoldm_pair():
    """(datamodule, gaga GeoLDM, released EnLatentDiffusion with trainable_ae) with the released random weights."""
    models, egnn_models = ref.import_released("geoldm", "equivariant_diffusion.en_diffusion", "egnn.models")
    torch.manual_seed(0)
    encoder = {"_target_": "gaga.nn.EquivariantEncoder", "hidden_nf": HIDDEN, "n_layers": 1}
    decoder = {"_target_": "gaga.nn.EquivariantDecoder", "hidden_nf": HIDDEN, "n_layers": LAYERS}
    datamodule, ours = tiny_setup(
        "geoldm",
        net=NET,
        schedule=SCHEDULE,
        ema_decay=0.0,
        normalizer={"include_charges": True},
        encoder=encoder,
        decoder=decoder,
        latent_nf=LATENT_NF,
        train=16,
    )
    features = ours.normalizer.num_features(len(ours.hparams.dataset["atom_symbols"]))
    options = ref.egnn_options(HIDDEN, LAYERS)
    released_encoder = egnn_models.EGNN_encoder_QM9(
        in_node_nf=features, out_node_nf=LATENT_NF, include_charges=True, **{**options, "n_layers": 1}
    )
    released_decoder = egnn_models.EGNN_decoder_QM9(
        in_node_nf=LATENT_NF, out_node_nf=features, include_charges=True, **options
    )
    vae = models.EnHierarchicalVAE(
        encoder=released_encoder,
        decoder=released_decoder,
        in_node_nf=features,
        n_dims=3,
        latent_node_nf=LATENT_NF,
        kl_weight=0.01,
        norm_values=[1, 4, 10],
        include_charges=True,
    )
    dynamics = egnn_models.EGNN_dynamics_QM9(in_node_nf=LATENT_NF + 1, **options)
    released = models.EnLatentDiffusion(
        vae=vae,
        trainable_ae=True,
        dynamics=dynamics,
        in_node_nf=LATENT_NF,
        **RELEASED_PROCESS,
    )
    ours.net.load_state_dict(ref.gaga_state_dict(dynamics.state_dict()))
    ours.encoder.load_state_dict(ref.gaga_state_dict(released_encoder.state_dict(), LATENT_NF))
    ours.decoder.load_state_dict(ref.gaga_state_dict(released_decoder.state_dict()))
    return datamodule, ours.double(), released.double()


@needs_geoldm
def test_geoldm_encoder_reads_raw_atoms_as_released(geoldm_pair):
    """The encoder's posterior (means, both standard deviations) from the atoms in raw units, as released."""
    datamodule, ours, released = geoldm_pair
    batch = _batch(datamodule)
    pos, h = ours.autoencoder_atoms(batch)
    mean_pos, mean_h, std_pos, std_h = ours.encoder.posterior(pos.double(), h.double(), batch.batch)
    x, h_dict, node_mask, edges = _edm_inputs(batch)
    xh = torch.cat([x, h_dict["categorical"], h_dict["integer"]], dim=2)
    z_x_mu, z_x_sigma, z_h_mu, z_h_sigma = released.vae.encoder._forward(xh, node_mask, edges, None)
    mask = node_mask.bool().squeeze(2)
    close(mean_pos, z_x_mu[mask], "GeoLDM encoder coordinates")
    close(mean_h, z_h_mu[mask], "GeoLDM encoder features")
    close(std_pos, z_x_sigma[mask], "GeoLDM encoder coordinate std")
    close(std_h, z_h_sigma[mask], "GeoLDM encoder feature std")
    z_x, _, z_h, _ = released.vae.encode(x, h_dict, node_mask, edges, None)
    latents = ours.diffusion_state(batch)
    close(latents[0], z_x[mask], "GeoLDM latents (coordinates)")
    close(latents[1], z_h[mask], "GeoLDM latents (features)")


@needs_geoldm
def test_geoldm_decoder_and_dynamics(geoldm_pair):
    datamodule, ours, released = geoldm_pair
    batch = _batch(datamodule)
    z_pos, z_h = (value.double() for value in ours.diffusion_state(batch))
    node_mask, edges = ref.masks(batch.batch)
    z = ref.dense(torch.cat([z_pos, z_h], dim=1), batch.batch)
    mask = node_mask.bool().squeeze(2)
    pos_rec, h_rec = ours.decoder(z_pos, z_h, batch.batch)
    x_rec, h_rec_released = released.vae.decoder._forward(z, node_mask, edges, None)
    close(pos_rec, x_rec[mask], "GeoLDM decoder coordinates")
    close(h_rec, h_rec_released[mask], "GeoLDM decoder features")
    t = torch.linspace(0.1, 0.9, batch.num_graphs, dtype=torch.float64)
    eps_pos, eps_h = ours.net(z_pos, z_h, t, batch.batch)
    expected = released.phi(z, t.reshape(-1, 1), node_mask, edges, None)
    close(torch.cat([eps_pos, eps_h], dim=1), expected[mask], "GeoLDM dynamics")


@needs_geoldm
def test_geoldm_joint_loss_and_gradients(geoldm_pair):
    """gaga's joint objective (latent l2 loss with EDM's 0.5 + reconstruction in raw units, weight 1 each) equals the
    released training loss minus its parameter-free latent prior KL and padding cross-entropy, and so do the
    dynamics' and decoder's gradients of the batch mean."""
    datamodule, ours, released = geoldm_pair
    batch = _batch(datamodule)
    ours.train(), released.train()
    tape = ref.NoiseTape(batch.batch)
    ours.zero_grad()
    with tape.record():
        terms = ours.training_terms(batch, torch.Generator().manual_seed(4))
    terms["loss"].mean().backward()
    latent = torch.cat([tape.draws[0], tape.draws[1]], dim=1).clone()  # the latent's noise, before it is replayed
    x, h, node_mask, edges = _edm_inputs(batch)
    tape.wire(released, LATENT_NF)
    tape.wire(released.vae, LATENT_NF)
    released.zero_grad()
    with tape.steps():
        loss = released(x, h, node_mask, edges)
    tape.assert_used_up()
    with torch.no_grad():
        z_x, _, z_h, _ = released.vae.encode(x, h, node_mask, edges, None)
        sigma_0 = released.sigma(released.gamma(torch.zeros(1, 1, dtype=torch.float64)), x).reshape(())
        noise = ref.dense(torch.cat([remove_mean(latent[:, :3], batch.batch), latent[:, 3:]], dim=1), batch.batch)
        z = (torch.cat([z_x, z_h], dim=2) + sigma_0 * noise) * node_mask
        kl_prior = released.kl_prior(z, node_mask)
    num_types, n_max = batch.x.shape[1], int(node_mask.shape[1])
    padding = padding_cross_entropy(batch, num_types) / ((3 + num_types + 1) * n_max)  # training divides by (3 + F) N
    close(terms["loss"], loss - kl_prior - padding, "GeoLDM joint training loss")
    loss.mean().backward()
    _compare_gradients(ours.net, released.dynamics, "GeoLDM dynamics")
    _compare_gradients(ours.decoder, released.vae.decoder, "GeoLDM decoder")


@needs_geoldm
def test_geoldm_nll_terms(geoldm_pair):
    """gaga's validation NLL equals the released one (latent NLL + undivided reconstruction + the N*3 constants of
    log_constants_p_h_given_z0; -log p(N) is qm9/losses.py's) but for the released padding cross-entropy, and its
    constants term equals the released one."""
    datamodule, ours, released = geoldm_pair
    batch = _batch(datamodule)
    ours.eval(), released.eval()
    tape = ref.NoiseTape(batch.batch)
    with torch.no_grad():
        with tape.record():
            terms = ours.nll_terms(batch, torch.Generator().manual_seed(5))
        x, h, node_mask, edges = _edm_inputs(batch)
        tape.wire(released, LATENT_NF)
        tape.wire(released.vae, LATENT_NF)
        with tape.steps():
            nll = released(x, h, node_mask, edges)
        tape.assert_used_up()
        constants = -released.log_constants_p_h_given_z0(torch.cat([h["categorical"], h["integer"]], 2), node_mask)
    close(terms["h_given_z0_constants"], constants, "GeoLDM N*3 constants")
    close(terms["nll"] - terms["num_atoms"], nll - padding_cross_entropy(batch, batch.x.shape[1]), "GeoLDM NLL")


@needs_geoldm
def test_geoldm_reverse_step_and_decoding(geoldm_pair):
    """One ancestral step on the latents from t = 1 to 0, p(z | z_0) and the decoder: the same atoms."""
    datamodule, ours, released = geoldm_pair
    batch = _batch(datamodule)
    ours.eval(), released.eval()
    generator = torch.Generator().manual_seed(6)
    z_pos, z_h = (value.double() for value in ours.diffusion_state(batch))
    output, z0_ours, z0, (x, h_latent), node_mask, edges = _one_reverse_step(
        ours, ours.decode, released, LATENT_NF, z_pos, z_h, batch, generator
    )
    with torch.no_grad():
        x_out, h_out = released.vae.decode(torch.cat([x, h_latent["integer"]], dim=2), node_mask, edges, None)
    mask = node_mask.bool().squeeze(2)
    close(z0_ours, z0[mask], "GeoLDM z_0 after one reverse step")
    close(output.pos, x_out[mask], "GeoLDM decoded coordinates")
    assert torch.equal(output.atom_types, h_out["categorical"][mask].argmax(1)), "GeoLDM decoded atom types"
    assert torch.equal(output.charges, h_out["integer"][mask].squeeze(1)), "GeoLDM decoded charges"

"""gaga.pictures on real molecules (RDKit-embedded and QM9) and tiny real backbones: the files it writes, the
denoising chains it keeps, the histograms behind the W1 metrics, and drawing failures that never stop sampling."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import wasserstein_distance

from gaga.data.elements import AtomEncoder
from gaga.data.molecules import to_molecule_set
from gaga.metrics.evaluation import geometry_samples
from gaga.pictures.distributions import distribution_panels
from gaga.pictures.grid import CELL_PIXELS, draw_grid
from gaga.pictures.molecules import describe, label, rdkit_molecule
from gaga.pictures.render3d import CELL_INCHES, draw_molecules_3d
from gaga.sampling import ChainRecorder, decode_chain, frame_steps, generate
from tests.conftest import quiet_trainer, tiny_setup


def embedded(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(atomic numbers, coordinates) of a molecule embedded by RDKit's ETKDG and MMFF-relaxed, hydrogens included."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    molecule = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(molecule, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(molecule)
    numbers = np.array([atom.GetAtomicNum() for atom in molecule.GetAtoms()])
    return numbers, molecule.GetConformer().GetPositions()


@pytest.fixture(scope="module")
def molecules():
    """Ethanol (valid), nonane (29 atoms), a carbon with five hydrogens (invalid), ethanol and water 10 Angstrom
    apart (two fragments) and a lone carbon atom."""
    ethanol, nonane, water = (embedded(smiles) for smiles in ("CCO", "CCCCCCCCC", "O"))
    directions = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=float)
    overloaded = (np.array([6, 1, 1, 1, 1, 1]), np.vstack([np.zeros(3), 1.09 * directions]))
    pair = (np.concatenate([ethanol[0], water[0]]), np.vstack([ethanol[1], water[1] + [10.0, 0.0, 0.0]]))
    single = (np.array([6]), np.zeros((1, 3)))
    return to_molecule_set([ethanol, nonane, overloaded, pair, single], "test molecules")


def test_labels_say_what_each_molecule_is(molecules):
    described = describe(molecules, "qm9")
    labels = [label(molecule, rdkit_molecule(molecule, "qm9")[1]) for molecule in described]
    assert labels[0] == "CCO\n9 atoms, stable"
    assert labels[1] == "CCCCCCCCC\n29 atoms, stable"
    assert labels[2].startswith("invalid\n6 atoms") and labels[2].endswith("unstable")
    assert labels[3] == "CCO.O\n12 atoms, 2 fragments, stable"
    assert labels[4].endswith("1 atom, unstable")


def test_grid_and_3d_renders_open_with_the_expected_size(molecules, tmp_path):
    grid = draw_grid(molecules, "qm9", tmp_path / "molecules.png", count=24, columns=3)
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.size == (3 * CELL_PIXELS[0], 2 * CELL_PIXELS[1])
        assert len(set(image.convert("L").getdata())) > 2  # something drawn, not a blank sheet
    renders = draw_molecules_3d(molecules, "qm9", tmp_path / "molecules_3d.png", count=4, columns=2)
    with Image.open(renders) as image:
        width, height = image.size
        assert image.format == "PNG" and width == round(2 * CELL_INCHES * 100)
        assert abs(height - 2 * CELL_INCHES * 1.08 * 100) <= 1


@pytest.mark.parametrize(
    ("backbone", "sampler"),
    [
        ("edm", "ancestral"),
        ("edm", "ddim"),
        ("geoldm", "ancestral"),
        ("flow_matching", "euler"),
        ("flow_matching", "adaptive"),
    ],
)
def test_chain_keeps_the_start_state_and_ends_at_the_samplers_output(backbone, sampler):
    _, model = tiny_setup(backbone)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    num_atoms = torch.tensor([4, 6, 5])
    batch = torch.repeat_interleave(torch.arange(3), num_atoms)
    pos = torch.randn(15, 3, generator=generator)
    pos = pos - torch.zeros(3, 3).index_add_(0, batch, pos)[batch] / num_atoms[batch, None]  # zero CoM, as sampled
    h = torch.randn(15, model.feature_width, generator=generator)
    if model.hparams.zero_mean_features:
        h = h - torch.zeros(3, h.shape[1]).index_add_(0, batch, h)[batch] / num_atoms[batch, None]
    steps = frame_steps(100, 10, 4)
    assert steps == [100, 70, 30, 0]
    recorder = ChainRecorder(int(num_atoms[:2].sum()), steps)
    with torch.no_grad():
        chosen = model.build_sampler(sampler, stride=1 if sampler == "adaptive" else 10)  # dopri5: its own steps
        output = model.reverse(pos, h, batch, chosen, chosen.steps(100, 100), True, generator, None, recorder)
    assert sorted(recorder.states, reverse=True) == steps
    start_pos, start_h = recorder.states[100]
    assert torch.allclose(start_pos, pos[:10], atol=1e-6) and torch.allclose(start_h, h[:10], atol=1e-6)
    encoder = AtomEncoder("qm9", tuple(model.hparams.dataset["atom_symbols"]))
    frames = decode_chain(model, recorder, output, num_atoms[:2], encoder, 100)
    assert [frame.step for frame in frames] == steps and list(frames[0].molecules.num_atoms) == [4, 6]
    np.testing.assert_allclose(frames[-1].molecules.positions, output.pos[:10].numpy(), atol=1e-6)
    np.testing.assert_array_equal(frames[-1].molecules.atomic_numbers, encoder.decode(output.atom_types[:10].numpy()))
    scale = model.normalizer.position_scale
    if backbone == "flow_matching":  # the ODE's state at t = 0 is the data the sampler returns
        np.testing.assert_allclose((recorder.states[0][0] * scale).numpy(), output.pos[:10].numpy(), atol=1e-5)
    if backbone != "geoldm":  # the start state read as atoms: coordinates x position scale, argmax of the one-hot
        np.testing.assert_allclose(frames[0].molecules.positions, (pos[:10] * scale).numpy(), rtol=1e-5, atol=1e-5)
        one_hot = h[:10, : len(encoder.symbols)].argmax(dim=1).numpy()
        np.testing.assert_array_equal(frames[0].molecules.atomic_numbers, encoder.decode(one_hot))


def test_generate_keeps_the_first_molecules_chain_from_t_star():
    _, model = tiny_setup("edm")
    model.eval()
    model.set_truncation({"t_star": 40, "v_hat": {"pos": 1.9, "h": 0.01}})
    generated = generate(model, 5, 3, stride=4, progress=False, chain=2, chain_frames=6)
    frames = generated.chain
    assert [frame.step for frame in frames] == frame_steps(40, 4, 6) and frames[0].step == 40
    assert "T*=40" in frames[0].label and "start Gaussian" in frames[0].label and frames[-1].step == 0
    first_two = generated.molecules.subset(np.arange(2))
    np.testing.assert_array_equal(frames[-1].molecules.positions, first_two.positions)
    np.testing.assert_array_equal(frames[-1].molecules.atomic_numbers, first_two.atomic_numbers)
    with pytest.raises(ValueError, match="chain=4 is larger than the first batch"):
        generate(model, 5, 3, progress=False, chain=4)


def test_distribution_histograms_are_the_w1_metrics_arrays(qm9):
    generated = geometry_samples(qm9.subset(np.arange(0, 3000, 7)), "qm9")
    reference = geometry_samples(qm9.subset(np.arange(100_000, 101_500)), "qm9")
    panels = {panel.title.split("   ")[0]: panel for panel in distribution_panels(generated, reference)}
    assert {"C-H bond length", "angle at C", "atom types", "atoms per molecule", "fragments per molecule"} <= set(
        panels
    )
    bond = panels["C-H bond length"]
    for drawn, samples in ((bond.generated, generated), (bond.reference, reference)):
        lengths = samples.bond_lengths["C-H"]
        expected = np.histogram(lengths, bins=bond.edges)[0] / len(lengths) / np.diff(bond.edges)
        np.testing.assert_allclose(drawn, expected)
        assert 0.98 <= (drawn * np.diff(bond.edges)).sum() <= 1.0  # the central 99 % at least is in view
    w1 = wasserstein_distance(generated.bond_lengths["C-H"], reference.bond_lengths["C-H"])
    assert bond.title.endswith(f"W1 {w1:.3g}")
    counts = panels["atoms per molecule"]
    expected = np.bincount(generated.num_atoms, minlength=int(counts.edges[-1]) + 1)[int(counts.edges[0] + 0.5) :]
    np.testing.assert_allclose(counts.generated, expected[: len(counts.generated)] / len(generated.num_atoms))
    types = panels["atom types"]
    np.testing.assert_allclose(types.generated, generated.type_counts / generated.type_counts.sum())
    assert types.categories == ("H", "C", "N", "O", "F")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny EDM (T=100) after one training batch on real QM9 molecules."""
    folder = tmp_path_factory.mktemp("ckpt")
    datamodule, model = tiny_setup("edm")
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, default_root_dir=folder)
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(folder / "model.ckpt")
    return folder / "model.ckpt"


def test_a_picture_that_cannot_be_drawn_is_one_warning_and_the_samples_are_written(checkpoint, tmp_path, caplog):
    from gaga.cli import run_sampling
    from gaga.config import compose

    (tmp_path / "molecules.png").mkdir()  # the grid cannot be written there
    cfg = compose(
        "sample",
        [f"ckpt={checkpoint}", "n_samples=4", "batch_size=4", "stride=25", "evaluate=false", "pictures=3", "chain=2"],
        output_dir=str(tmp_path),
    )
    with caplog.at_level(logging.WARNING, logger="gaga"):
        run_sampling(cfg)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("molecules.png not drawn"), warnings
    assert "\n" not in warnings[0]
    for name in ("samples.sdf", "samples.xyz", "metrics.json", "molecules_3d.png", "chain.png", "chain.gif"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text())["start_step"] == 100
    with Image.open(tmp_path / "chain.gif") as animation:
        assert animation.n_frames == len(frame_steps(100, 25, 10))


def test_sample_py_logs_its_pictures_to_an_offline_wandb_run(checkpoint, tmp_path, monkeypatch):
    from gaga.cli import run_sampling
    from gaga.config import compose

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose(
        "sample",
        [f"ckpt={checkpoint}", "n_samples=3", "batch_size=3", "stride=25", "evaluate=false", "chain=1", "wandb=true"],
        output_dir=str(tmp_path),
    )
    run_sampling(cfg)
    media = [path.name for path in tmp_path.glob("wandb/offline-run-*/files/media/**/*") if path.is_file()]
    for name in ("molecules_png", "molecules_3d_png", "chain_png", "chain_gif"):
        assert any(file.startswith(name) for file in media), (name, media)
    assert any(file.endswith(".gif") for file in media) and any(file.endswith(".pdb") for file in media), media

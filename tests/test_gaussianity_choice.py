"""gaga.variance: each choice's tested Gaussian and start Gaussian against hand computations from the schedule and
per-molecule moments (plain loops over molecules, numpy's var/mean), and the reference code's own v_550 = 0.9261."""

import numpy as np
import pytest
import torch

from gaga.callbacks.gaussianity import GaussianityCallback
from gaga.data.elements import QM9_ATOMS
from gaga.gaussianity import FEATURES, POSITIONS, marginal_variance, molecule_blocks
from gaga.gaussianity.choice import choose_variance
from tests.conftest import EDM_ALPHA_BAR as ALPHA_BAR
from tests.conftest import tiny_setup
from tests.test_gaussianity_callback import fit_with

T_STAR = 550
BOTH = (POSITIONS, FEATURES)


@pytest.fixture(scope="module")
def molecules(qm9_sample):
    blocks, offsets = molecule_blocks(qm9_sample.subset(np.arange(200)), QM9_ATOMS)
    return blocks, offsets, [{b: v[offsets[i] : offsets[i + 1]] for b, v in blocks.items()} for i in range(200)]


def hand_start(choice, per_molecule):
    """Start variance per degree of freedom at T* = 550 for both blocks, by hand."""
    a = ALPHA_BAR[T_STAR]
    if choice == "paper":  # v_hat: mean of each molecule's unbiased variance over all its entries
        v = np.mean([np.var(np.concatenate([m[POSITIONS].ravel(), m[FEATURES].ravel()]), ddof=1) for m in per_molecule])
        return {b: 1 - a * (1 - v) for b in BOTH}
    if choice == "reference":  # mean per-molecule RMS over all columns, used as a variance
        v = np.mean(
            [np.sqrt(np.mean(np.concatenate([m[POSITIONS].ravel(), m[FEATURES].ravel()]) ** 2)) for m in per_molecule]
        )
        return {b: a * v + 1 - a for b in BOTH}
    # exact: unbiased variance per block over its value on zero-mean noise, E = F (N - 1) / (N F - 1)
    start = {}
    for b in BOTH:
        v = np.mean([np.var(m[b].ravel(), ddof=1) for m in per_molecule])
        noise = np.mean([m[b].shape[1] * (len(m[b]) - 1) / (m[b].size - 1) for m in per_molecule])
        start[b] = a * v / noise + 1 - a
    return start


@pytest.fixture(scope="module")
def edm_1000():
    """A tiny EDM on EDM's QM9 schedule (polynomial_2, 1e-5, T = 1000): the sampler's start Gaussian as sampled."""
    schedule = {"_target_": "gaga.diffusion.schedules.NoiseSchedule", "timesteps": 1000}
    return tiny_setup(schedule=schedule)[1]


def start_variance(model, start: dict, t: int) -> dict:
    """The model's start variance per degree of freedom at step t with these start v_hat."""
    model.set_truncation({"t_star": t, "v_hat": {"pos": start[POSITIONS], "h": start[FEATURES]}})
    gaussian = model.truncation.start_gaussian(t)
    return dict(zip(BOTH, (gaussian.variance_pos, gaussian.variance_h), strict=True))


@pytest.mark.parametrize("choice", ["paper", "reference", "exact"])
def test_start_variance_at_550_equals_hand_computation(molecules, choice, edm_1000):
    blocks, offsets, per_molecule = molecules
    _, start = choose_variance(blocks, offsets, choice, BOTH)
    expected = hand_start(choice, per_molecule)
    for b in BOTH:
        assert start_variance(edm_1000, start, T_STAR)[b] == pytest.approx(expected[b], rel=1e-6), b


def test_tested_gaussian_of_each_choice(molecules):
    blocks, offsets, per_molecule = molecules
    a = ALPHA_BAR[T_STAR]
    paper, _ = choose_variance(blocks, offsets, "paper", BOTH)
    assert marginal_variance(paper, a)["all"] == pytest.approx(hand_start("paper", per_molecule)[POSITIONS])
    reference, _ = choose_variance(blocks, offsets, "reference", BOTH)
    for b in BOTH:  # the reference tests each block against its own RMS
        rms = np.mean([np.sqrt(np.mean(m[b] ** 2)) for m in per_molecule])
        assert marginal_variance(reference, a)[b] == pytest.approx(a * rms + 1 - a)
    exact, start = choose_variance(blocks, offsets, "exact", BOTH)
    for b in BOTH:  # what the unbiased estimator sees on x_t: alpha_bar v + (1 - alpha_bar) E[noise]
        v = np.mean([np.var(m[b].ravel(), ddof=1) for m in per_molecule])
        noise = np.mean([m[b].shape[1] * (len(m[b]) - 1) / (m[b].size - 1) for m in per_molecule])
        assert marginal_variance(exact, a)[b] == pytest.approx(a * v + (1 - a) * noise)
    with pytest.raises(ValueError, match="gaga.variance"):
        choose_variance(blocks, offsets, "mine", BOTH)


def test_reference_start_is_the_reference_codes_v550(qm9_train, edm_1000):
    """QuJX/GAGA: dataset variance 0.848 and, in its own comment, v_550 = 0.9261."""
    blocks, offsets = molecule_blocks(qm9_train, QM9_ATOMS)
    _, start = choose_variance(blocks, offsets, "reference", BOTH)
    assert start[POSITIONS] == start[FEATURES] == pytest.approx(0.848, abs=0.001)
    assert start_variance(edm_1000, start, T_STAR)[POSITIONS] == pytest.approx(0.9261, abs=0.0005)


@pytest.mark.parametrize("choice", ["paper", "reference"])
def test_callback_gives_the_model_the_choice_start(tmp_path, choice):
    trainer, model = fit_with(GaussianityCallback(40, variance=choice, workers=1), tmp_path)
    datamodule = trainer.datamodule
    blocks, offsets = model.gaussianity_data(datamodule.ordered_loader("train"), progress=False)
    _, start = choose_variance(blocks, offsets, choice, BOTH)
    a = float(model.schedule.alpha2(torch.tensor(40)))
    gaussian = model.truncation.start_gaussian(40)
    expected = (a * start[POSITIONS] + 1 - a, a * start[FEATURES] + 1 - a)
    assert (gaussian.variance_pos, gaussian.variance_h) == pytest.approx(expected)
    assert model.truncation.v_hat_pos == model.truncation.v_hat_h  # both choices start every block at one scalar


def test_geom_preset_tests_coordinates_only_and_starts_both_blocks(molecules, tmp_path):
    """gaga=per_molecule_geom (experiment=edm_gaga_drugs): the reference's GEOM procedure, coordinates only."""
    from omegaconf import OmegaConf

    from gaga.config import compose
    from gaga.gaussianity import GaussianitySettings, find_t_star

    cfg = compose("train", ["experiment=edm_gaga_drugs"], output_dir=str(tmp_path))
    options = OmegaConf.to_container(cfg.gaga)
    assert options["tested_blocks"] == [POSITIONS] and options["variance"] == "reference" and cfg.gaga.t_star == 650
    keys = ("mode", "tested_blocks", "variance", "alpha", "mi_threshold", "min_atoms", "aggregate")
    settings = GaussianitySettings.from_dict({k: options[k] for k in keys} | {"zero_com_blocks": BOTH, "workers": 1})
    blocks, offsets, _ = molecules
    result = find_t_star(blocks, offsets, ALPHA_BAR, settings, progress=False)
    assert set(result.t_star_by_block) == {POSITIONS} and result.t_star == result.t_star_by_block[POSITIONS]
    assert set(result.summary["start_v_hat"]) == set(BOTH)  # the sampler still starts both blocks

"""QM9's properties for conditional generation: values against qm9pack's CSV read with the csv module and converted by
hand as EDM converts them, EDM's halves against a transcription of its code, EDM's normalisation, the property-given-N
sampler against its histogram (chi-square), and the errors for bad names."""

import csv

import numpy as np
import pytest
import torch
from scipy import stats

from gaga.data.datamodule import MoleculeDataModule
from gaga.data.drugs import GeomDrugs
from gaga.data.properties import QM9_PROPERTIES, PropertyGivenSize, PropertyNorms, check_conditioning
from gaga.data.qm9 import QM9, qm9pack_data_dir
from tests.conftest import DATA_DIR


def csv_rows(count: int) -> list[dict]:
    with (qm9pack_data_dir() / "qm9_part1.csv").open() as stream:
        reader = csv.DictReader(stream)
        return [next(reader) for _ in range(count)]


def test_properties_are_qm9packs_values_in_edms_units(qm9):
    rows = csv_rows(5)  # QM9 indices 1..5: the cache is sorted by index, so molecules 0..4
    assert [int(row["Index"]) for row in rows] == [1, 2, 3, 4, 5]
    for i, row in enumerate(rows):
        assert qm9.properties["alpha"][i] == float(row["Polarizability_bohr3"])  # Bohr^3, as EDM
        assert qm9.properties["mu"][i] == float(row["Dipole_debye"])
        assert qm9.properties["Cv"][i] == float(row["Heatcapacity_Cv_cal_mol_K"])
        for name, column in (("homo", "HOMO_au"), ("lumo", "LUMO_au"), ("gap", "HOMO_LUMO_gap_au")):
            # EDM: Hartree x 27.2114 (its qm9_to_eV); its table reports meV
            assert qm9.properties[name][i] == pytest.approx(float(row[column]) * 27.2114 * 1000, rel=1e-12)
    # by hand, methane (QM9 index 1): gap 0.5048 Ha = 13,736.3 meV, alpha 13.21 Bohr^3
    assert qm9.properties["gap"][0] == pytest.approx(13736.31, abs=0.01)
    assert qm9.properties["alpha"][0] == 13.21
    assert set(qm9.properties) == set(QM9_PROPERTIES) and len(qm9.properties["gap"]) == 130_831


def edm_halves_transcribed(train_split_length: int) -> dict[str, np.ndarray]:
    """EDM's qm9/data/utils.py, as it cuts its training data into halves."""
    np.random.seed(42)
    fixed_perm = np.random.permutation(train_split_length)
    return {"second": fixed_perm[train_split_length // 2 :], "first": fixed_perm[0 : train_split_length // 2]}


@pytest.fixture(scope="module")
def halves() -> dict[str, MoleculeDataModule]:
    modules = {}
    for half in ("first", "second", None):
        module = MoleculeDataModule(QM9(DATA_DIR), conditioning=["alpha", "homo"], half=half)
        module.setup()
        modules[half] = module
    return modules


def test_halves_are_edms_disjoint_50000s(qm9, halves):
    whole = halves[None].splits["train"]
    expected = edm_halves_transcribed(len(whole))
    for half in ("first", "second"):
        split = halves[half].splits["train"]
        assert len(split) == 50_000
        assert split.smiles == [whole.smiles[i] for i in expected[half]]
        np.testing.assert_array_equal(split.properties["alpha"], whole.properties["alpha"][expected[half]])
    first, second = (set(halves[half].splits["train"].mol_ids.tolist()) for half in ("first", "second"))
    assert not first & second and first | second == set(whole.mol_ids.tolist())
    assert halves["second"].splits["valid"].smiles == halves[None].splits["valid"].smiles  # only training is halved


def test_batches_carry_the_properties_and_norms_are_edms(halves):
    module = halves["second"]
    batch = next(iter(module.ordered_loader("train")))
    train = module.splits["train"]
    size = batch.num_graphs
    expected = np.stack([train.properties["alpha"][:size], train.properties["homo"][:size]], axis=1)
    np.testing.assert_allclose(batch.properties.numpy(), expected, rtol=1e-6)
    description = module.conditioning_description()
    # EDM's compute_mean_mad for qm9_second_half: mean and mean absolute deviation of the validation split
    valid = torch.tensor(module.splits["valid"].properties["alpha"])
    assert description["norms"]["mean"][0] == pytest.approx(float(valid.mean()))
    assert description["norms"]["mad"][0] == pytest.approx(float((valid - valid.mean()).abs().mean()))
    assert description["units"] == ["Bohr^3", "meV"]
    norms = PropertyNorms.from_record(description["norms"])
    values = torch.tensor([[70.0, -6000.0]])
    torch.testing.assert_close(norms.denormalise(norms.normalise(values)), values)


def test_property_given_size_draws_from_its_histogram():
    rng = np.random.default_rng(0)
    sizes = np.repeat([9, 19], [4000, 6000])
    values = np.concatenate([rng.normal(50, 3, 4000), rng.gamma(3.0, 5.0, 6000) + 60])[:, None]
    distribution = PropertyGivenSize.fit(["alpha"], sizes, values)
    draws = distribution.sample(torch.full((20_000,), 19), torch.Generator().manual_seed(1)).double().numpy()[:, 0]
    chosen = values[sizes == 19, 0]
    low, high = chosen.min(), chosen.max()
    assert low <= draws.min() and draws.max() <= high
    # 20 coarse bins of the same range: the draws' counts against the data's proportions
    edges = np.linspace(low, high + 1e-9, 21)
    expected = np.histogram(chosen, edges)[0] / len(chosen) * len(draws)
    observed = np.histogram(draws, edges)[0]
    keep = expected >= 5
    assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > 1e-3
    with pytest.raises(ValueError, match="no training molecule has 12 atoms"):
        distribution.sample(torch.tensor([12]))


def test_bad_property_names_stop_with_the_choices():
    with pytest.raises(ValueError, match=r"'polarisability' is not a property of qm9; choose from \['alpha', 'gap'"):
        check_conditioning(["polarisability"], QM9_PROPERTIES, "qm9")
    with pytest.raises(ValueError, match="drugs data carries no molecular properties"):
        MoleculeDataModule(GeomDrugs(), conditioning=["alpha"])
    with pytest.raises(ValueError, match="data.half='third'"):
        MoleculeDataModule(QM9(), half="third")

"""Distribution metrics: bond lengths and angles read from inferred bonds, and the W1 / TV distances between sets.

Oracles: textbook geometries (tetrahedral angle), and distances with closed forms (shifted samples, TV of
histograms worked out by hand).
"""

import numpy as np
import pytest

from gaga.data.elements import atomic_number
from gaga.metrics import evaluate_molecules, geometry_samples
from gaga.metrics.distributions import wasserstein_1

TETRAHEDRAL = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)


def methane(ch: float = 1.09):
    return np.array([6, 1, 1, 1, 1]), np.vstack([[0, 0, 0], ch * TETRAHEDRAL])


def water():
    half = np.radians(104.5 / 2)
    arm = 0.96 * np.array([np.sin(half), np.cos(half), 0])
    return np.array([atomic_number("O"), 1, 1]), np.array([[0, 0, 0], arm, arm * [-1, 1, 1]])


def test_geometry_reads_bond_lengths_and_angles():
    samples = geometry_samples([methane(), water()])
    assert set(samples.bond_lengths) == {"C-H", "O-H"}
    assert np.allclose(samples.bond_lengths["C-H"], 1.09) and len(samples.bond_lengths["C-H"]) == 4
    assert np.allclose(samples.bond_angles["C"], np.degrees(np.arccos(-1 / 3)))  # 109.47 degrees, 6 of them
    assert len(samples.bond_angles["C"]) == 6 and np.allclose(samples.bond_angles["O"], 104.5)
    assert samples.num_atoms.tolist() == [5, 3] and samples.type_counts.tolist() == [6, 1, 0, 1, 0]


def test_identical_sets_are_at_distance_zero(qm9_sample):
    subset = qm9_sample.subset(np.arange(300))
    metrics = evaluate_molecules(subset, reference=subset, strain_molecules=0, progress=False)
    distances = {key: value for key, value in metrics.items() if key.startswith("w1_")}
    assert {"w1_num_atoms", "w1_atom_types", "w1_bond_length", "w1_bond_angle", "w1_bond_length.C-H"} <= set(distances)
    assert max(distances.values()) == pytest.approx(0.0, abs=1e-12)


def test_distances_have_their_closed_forms():
    reference = geometry_samples([water(), water()])
    metrics = evaluate_molecules([methane()], reference=reference, strain_molecules=0, progress=False)
    assert metrics["w1_num_atoms"] == pytest.approx(2.0)
    # H, C, N, O, F shares: methane (0.8, 0.2, 0, 0, 0), water (2/3, 0, 0, 1/3, 0)
    assert metrics["w1_atom_types"] == pytest.approx(0.5 * (0.8 - 2 / 3 + 0.2 + 1 / 3))
    assert "w1_bond_length" not in metrics  # no bond type in common
    stretched = evaluate_molecules([methane(1.12)], reference=geometry_samples([methane(1.09)]), strain_molecules=0,
                                   progress=False)  # fmt: skip
    assert stretched["w1_bond_length"] == pytest.approx(0.03) and stretched["w1_bond_angle"] == pytest.approx(0.0)


def test_wasserstein_of_a_shift_is_the_shift_and_matches_scipy():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    samples = rng.normal(size=1000)
    assert wasserstein_1(samples, samples + 0.25) == pytest.approx(0.25)
    for size_a, size_b in ((1, 1), (7, 5), (400, 1000)):
        a, b = rng.normal(size=size_a), rng.integers(0, 4, size=size_b).astype(float)
        assert wasserstein_1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)


def test_molecules_without_bonds_have_no_geometry(qm9_sample):
    """Early-training samples are often scattered atoms: no bonds, no angles, still a valid evaluation."""
    scattered = [(np.array([6, 8]), np.array([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]]))]
    assert geometry_samples(scattered).bond_lengths == {}
    reference = geometry_samples(qm9_sample.subset(np.arange(50)))
    metrics = evaluate_molecules(scattered, reference=reference, progress=False)
    assert metrics["num_fragments"] == 2.0 and "w1_bond_length" not in metrics

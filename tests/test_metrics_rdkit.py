"""RDKit metrics: validity (largest fragment), uniqueness, novelty, connectivity, and EDM's GEOM single-bond rule.

Oracles: small molecules whose RDKit verdicts and SMILES are known, and counts worked out by hand.
"""

import numpy as np
import pytest

from gaga.data.elements import atomic_number
from gaga.metrics import evaluate_molecules, molecule_from_coordinates, training_smiles

TETRAHEDRAL = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)


def molecule(symbols: str, positions, shift=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    z = np.array([atomic_number(s) for s in symbols.split()])
    return z, np.asarray(positions, dtype=np.float64) + np.asarray(shift)


def methane(shift=(0.0, 0.0, 0.0)):
    return molecule("C H H H H", np.vstack([[0, 0, 0], 1.09 * TETRAHEDRAL]), shift)


def water(shift=(0.0, 0.0, 0.0)):
    half = np.radians(104.5 / 2)
    return molecule("O H H", [[0, 0, 0], [0.96 * np.sin(half), 0.96 * np.cos(half), 0],
                              [-0.96 * np.sin(half), 0.96 * np.cos(half), 0]], shift)  # fmt: skip


def protonated_formaldehyde():
    """H2C=O with a third H on the oxygen: trivalent neutral O, which RDKit rejects; fine with single bonds."""
    return molecule("C O H H H", [[0, 0, 0], [1.21, 0, 0], [-0.55, 0.94, 0], [-0.55, -0.94, 0], [1.69, 0.83, 0]])


def joined(*parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def evaluate(molecules, dataset="qm9", train_smiles=None):
    return evaluate_molecules(molecules, dataset, train_smiles, progress=False, strain_molecules=0)


def test_uniqueness_and_novelty_count_distinct_valid_smiles():
    known = set(training_smiles([methane()], progress=False))
    assert known == {"[H]C([H])([H])[H]"}
    metrics = evaluate([methane(), methane((5, 0, 0)), methane((0, 9, 0)), water()], train_smiles=known)
    assert metrics["validity"] == 1.0
    assert metrics["uniqueness"] == pytest.approx(2 / 4) and metrics["valid_x_unique"] == pytest.approx(0.5)
    assert metrics["novelty"] == pytest.approx(1 / 2)  # water is new, methane is not


def test_invalid_molecules_do_not_count_and_qm9_keeps_bond_orders():
    metrics = evaluate([protonated_formaldehyde(), water()])
    assert metrics["validity"] == pytest.approx(0.5) and metrics["uniqueness"] == 1.0
    assert "novelty" not in metrics


def test_drugs_validity_builds_single_bonds_as_edm_does():
    assert evaluate([protonated_formaldehyde()], "drugs")["validity"] == 1.0


def test_disconnected_molecule_is_valid_as_its_largest_fragment():
    metrics = evaluate([joined(methane(), water((6, 0, 0))), methane((3, 3, 3))], train_smiles=["O"])
    assert metrics["validity"] == 1.0 and metrics["uniqueness"] == pytest.approx(1 / 2)  # both read as methane
    assert metrics["connected"] == pytest.approx(1 / 2) and metrics["num_fragments"] == pytest.approx(3 / 2)
    assert metrics["novelty"] == 1.0


def test_sdf_molecule_carries_coordinates_and_inferred_bonds():
    z, positions = protonated_formaldehyde()
    built = molecule_from_coordinates(*water())
    assert built.GetNumBonds() == 2 and built.GetNumAtoms() == 3
    invalid = molecule_from_coordinates(z, positions)
    assert invalid.GetNumBonds() == 4
    assert np.allclose(invalid.GetConformer().GetPositions(), positions)

"""Wasserstein-1 distances between the structure distributions of generated and reference molecules.

Exact W1 between empirical distributions. Atom types are categories, so their W1 uses the discrete
metric (distance 1 between different types), which equals the total-variation distance.
"""

from __future__ import annotations

import numpy as np

from gaga.metrics.geometry import GeometrySamples

PER_TYPE_MIN_SHARE = 0.01  # bond types / angle centres reported one by one when >= 1 % of the reference samples


def wasserstein_1(samples_a: np.ndarray, samples_b: np.ndarray) -> float:
    """W1 distance between two empirical 1-D distributions: the area between their CDFs."""
    sorted_a, sorted_b = np.sort(samples_a), np.sort(samples_b)
    grid = np.sort(np.concatenate([sorted_a, sorted_b]))
    cdf_a = np.searchsorted(sorted_a, grid[:-1], side="right") / len(sorted_a)
    cdf_b = np.searchsorted(sorted_b, grid[:-1], side="right") / len(sorted_b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))


def total_variation(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Total-variation distance (= W1 under the discrete metric) between two histograms over the same categories."""
    return float(0.5 * np.abs(counts_a / counts_a.sum() - counts_b / counts_b.sum()).sum())


def grouped_wasserstein(
    generated: dict[str, np.ndarray], reference: dict[str, np.ndarray], name: str
) -> dict[str, float]:
    """W1 per group present in both, as `<name>.<group>` for groups holding >= 1 % of the reference samples,
    and `<name>`: their mean weighted by reference frequency over all shared groups. Empty if none is shared."""
    shared = [key for key in reference if len(generated.get(key, ())) and len(reference[key])]
    if not shared:
        return {}
    weights = np.array([len(reference[key]) for key in shared], dtype=np.float64)
    distances = np.array([wasserstein_1(generated[key], reference[key]) for key in shared])
    total_reference = sum(len(values) for values in reference.values())
    result = {name: float((weights * distances).sum() / weights.sum())}
    for key, weight, distance in sorted(zip(shared, weights, distances, strict=True), key=lambda item: -item[1]):
        if weight >= PER_TYPE_MIN_SHARE * total_reference:
            result[f"{name}.{key}"] = float(distance)
    return result


def distribution_distances(generated: GeometrySamples, reference: GeometrySamples) -> dict[str, float]:
    """w1_num_atoms (atoms), w1_atom_types (TV), w1_bond_length (Angstrom) and w1_bond_angle (degrees), with
    per-bond-type and per-centre-element entries."""
    if generated.encoder != reference.encoder:
        raise ValueError(f"cannot compare {generated.encoder.name} molecules with a {reference.encoder.name} reference")
    result = {
        "w1_num_atoms": wasserstein_1(np.asarray(generated.num_atoms), np.asarray(reference.num_atoms)),
        "w1_atom_types": total_variation(generated.type_counts, reference.type_counts),
    }
    result.update(grouped_wasserstein(generated.bond_lengths, reference.bond_lengths, "w1_bond_length"))
    result.update(grouped_wasserstein(generated.bond_angles, reference.bond_angles, "w1_bond_angle"))
    return result

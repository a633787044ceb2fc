"""One entry point for judging generated molecules: EDM stability, RDKit validity and uniqueness, novelty,
connectivity, W1 distances to a reference set and MMFF strain.

Definitions follow EDM (Hoogeboom et al. 2022, qm9/analyze.py and qm9/rdkit_functions.py):
- atom stability: fraction of atoms whose summed inferred bond orders is an allowed valence; molecule stability:
  fraction of molecules whose atoms are all stable. GEOM-Drugs uses the same tables over its 16 elements
  (a pair missing from the tables is no bond), as EDM's geom_predictor does.
- validity: fraction of molecules RDKit sanitises when built with the inferred bonds; each valid molecule is
  represented by the canonical SMILES of its largest fragment. For GEOM-Drugs EDM builds these RDKit molecules
  with every bond single (limit_bonds_to_one=True), and so does this module.
- uniqueness: distinct SMILES among valid ones; novelty: share of those distinct SMILES absent from the
  training SMILES (see `training_smiles`); valid_x_unique = validity x uniqueness.
Beyond EDM: connected (share of molecules whose bond graph is one piece) and num_fragments (mean number of
pieces), both over all molecules; W1 distances (see distributions.py); MMFF strain (see strain.py) averaged
over up to `strain_molecules` random molecules, of which `mmff_typed` is the share MMFF could type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from gaga.data.molecules import MoleculeSet, to_molecule_set
from gaga.metrics.bonds import BondRules, atom_valences, bond_rules, encode_types, infer_bonds, stable_atoms
from gaga.metrics.distributions import distribution_distances
from gaga.metrics.geometry import GeometrySamples, geometry_from_bonds
from gaga.metrics.rdkit_molecules import largest_fragment_smiles, rdkit_molecules
from gaga.metrics.strain import mmff_strain_per_atom

STRAIN_MOLECULES = 1000  # MMFF minimisation costs ~4 ms per QM9 molecule, so strain is estimated on a sample


def geometry_samples(
    molecules: MoleculeSet | Iterable, dataset: str = "qm9", source: str = "reference molecules"
) -> GeometrySamples:
    """Structure samples of a reference set (e.g. the test split); compute once, pass to `evaluate_molecules`."""
    molecules = to_molecule_set(molecules, source)
    rules = bond_rules(dataset)
    types = encode_types(molecules, rules, source)
    bonds = infer_bonds(types, molecules.positions, molecules.offsets, rules)
    return geometry_from_bonds(rules.encoder, types, molecules.positions, molecules.offsets, bonds)


@dataclass(frozen=True)
class Evaluation:
    """`evaluate`'s result: the metrics, and the structure samples of the evaluated molecules that the w1_* metrics
    compare with the reference (and that gaga.pictures.distributions plots)."""

    metrics: dict[str, float]
    geometry: GeometrySamples


def evaluate_molecules(*args, **kwargs) -> dict[str, float]:
    """All metrics of a set of molecules as a flat dict of floats (fractions, not percent): `evaluate`'s metrics,
    with `evaluate`'s arguments."""
    return evaluate(*args, **kwargs).metrics


def evaluate(
    molecules: MoleculeSet | Iterable,
    dataset: str = "qm9",
    train_smiles: Iterable[str] | None = None,
    reference: MoleculeSet | GeometrySamples | None = None,
    progress: bool = True,
    strain_molecules: int = STRAIN_MOLECULES,
    seed: int = 0,
    source: str = "generated molecules",
) -> Evaluation:
    """All metrics of a set of molecules (a flat dict of floats, fractions, not percent) and their structure samples.

    `molecules`: a MoleculeSet or (atomic numbers, positions in Angstrom) pairs, hydrogens included.
    Keys needing an input are left out without it: novelty (`train_smiles`), w1_* (`reference`).
    `strain_molecules=0` skips MMFF strain; `seed` picks the strain sample; `source` names the input in errors.
    """
    molecules = to_molecule_set(molecules, source)
    rules = bond_rules(dataset)
    types = encode_types(molecules, rules, source)
    bonds = infer_bonds(types, molecules.positions, molecules.offsets, rules)
    stable = stable_atoms(types, atom_valences(bonds, len(types)), rules)
    built = rdkit_molecules(molecules, bonds, rules.rdkit_single_bonds, progress=progress, description="evaluating")
    valid_smiles = [largest_fragment_smiles(molecule) for molecule in built if molecule is not None]
    geometry = geometry_from_bonds(rules.encoder, types, molecules.positions, molecules.offsets, bonds)
    fragments = geometry.fragments
    metrics = {
        "num_molecules": float(len(molecules)),
        "atom_stability": float(stable.mean()),
        "mol_stability": float(np.logical_and.reduceat(stable, molecules.offsets[:-1]).mean()),
        **smiles_metrics(valid_smiles, len(molecules), train_smiles),
        "connected": float((fragments == 1).mean()),
        "num_fragments": float(fragments.mean()),
    }
    if reference is not None:
        if not isinstance(reference, GeometrySamples):
            reference = geometry_samples(reference, dataset)
        metrics.update(distribution_distances(geometry, reference))
    if strain_molecules > 0:
        metrics.update(strain_metrics(molecules, rules, strain_molecules, seed))
    return Evaluation(metrics, geometry)


def smiles_metrics(valid_smiles: list[str], num_molecules: int, train_smiles: Iterable[str] | None) -> dict[str, float]:
    """EDM's validity, uniqueness (among valid), valid x unique and novelty (among unique)."""
    validity = len(valid_smiles) / num_molecules
    unique = set(valid_smiles)
    uniqueness = len(unique) / len(valid_smiles) if valid_smiles else 0.0
    metrics = {"validity": validity, "uniqueness": uniqueness, "valid_x_unique": validity * uniqueness}
    if train_smiles is not None:
        known = train_smiles if isinstance(train_smiles, (set, frozenset)) else set(train_smiles)
        metrics["novelty"] = len(unique - known) / len(unique) if unique else 0.0
    return metrics


def strain_metrics(molecules: MoleculeSet, rules: BondRules, max_molecules: int, seed: int) -> dict[str, float]:
    """mmff_strain (mean kcal/mol per atom over typed molecules) and mmff_typed (typed share of a random sample).

    The molecules are built with their full inferred bond orders (GEOM-Drugs too) and their own coordinates.
    """
    sample = molecules.subset(np.sort(np.random.default_rng(seed).permutation(len(molecules))[:max_molecules]))
    types = encode_types(sample, rules, "strain sample")
    bonds = infer_bonds(types, sample.positions, sample.offsets, rules)
    built = rdkit_molecules(sample, bonds, single_bonds=False, with_coordinates=True)
    strains = [strain for strain in (mmff_strain_per_atom(m) for m in built if m is not None) if strain is not None]
    result = {"mmff_typed": len(strains) / len(sample)}
    if strains:
        result["mmff_strain"] = float(np.mean(strains))
    return result

"""What generated molecules are compared with: the training SMILES (novelty) and the test split (W1 distances).

Training SMILES are inferred from coordinates as EDM does, once per dataset split, and cached beside the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gaga.atomic_files import write_text_atomically
from gaga.data.drugs import DrugsDataMissing
from gaga.data.molecules import MoleculeSet
from gaga.data.sources import source_for
from gaga.metrics.bonds import bond_rules
from gaga.metrics.evaluation import geometry_samples
from gaga.metrics.geometry import GeometrySamples
from gaga.metrics.rdkit_molecules import training_smiles

SMILES_CACHE_VERSION = 1
REFERENCE_MOLECULES = 20_000  # test conformers kept for W1 (all of QM9's 13,083; a random part of GEOM-Drugs')


@dataclass
class EvaluationReference:
    """Inputs of `evaluate_molecules` that come from a dataset; None where the dataset is not available."""

    train_smiles: set[str] | None = None
    geometry: GeometrySamples | None = None
    notes: list[str] = field(default_factory=list)


def first_conformers(molecules: MoleculeSet, indices: np.ndarray) -> MoleculeSet:
    """One conformer per molecule id among `indices`: the first listed (caches list the lowest energy first)."""
    _, first = np.unique(molecules.mol_ids[indices], return_index=True)
    return molecules.subset(indices[np.sort(first)])


def fingerprint(molecules: MoleculeSet) -> str:
    """Short hash of the atoms, coordinates and molecule boundaries: equal only for the same molecules."""
    digest = hashlib.sha256()
    for array in (molecules.offsets, molecules.atomic_numbers, molecules.positions):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def cached_training_smiles(molecules: MoleculeSet, dataset: str, cache_file: Path, progress: bool = True) -> list[str]:
    """`training_smiles` of `molecules`, read from `cache_file` when it was written for the same molecules."""
    header = (
        f"# gaga training SMILES v{SMILES_CACHE_VERSION} {dataset} molecules={len(molecules)} "
        f"sha256={fingerprint(molecules)}"
    )
    if cache_file.exists():
        lines = cache_file.read_text(encoding="utf-8").splitlines()
        if lines and lines[0] == header:
            return lines[1:]
    smiles = training_smiles(molecules, dataset, progress)
    write_text_atomically(cache_file, "\n".join([header, *smiles]) + "\n")
    return smiles


def dataset_reference(
    dataset: str,
    data_dir: str | Path,
    progress: bool = True,
    with_train_smiles: bool = True,
    max_reference_molecules: int = REFERENCE_MOLECULES,
    seed: int = 0,
) -> EvaluationReference:
    """Training SMILES (unless `with_train_smiles` is False) and test-split geometry of "qm9" or "drugs" from the
    caches in `data_dir`. GEOM-Drugs cannot be shipped: without its cache both are None and `notes` says so.
    """
    bond_rules(dataset)  # rejects an unknown dataset name
    source = source_for(dataset, data_dir)
    try:
        molecules = source.load()
    except DrugsDataMissing as missing:
        return EvaluationReference(notes=[f"novelty and w1_* skipped: {str(missing).splitlines()[0]}"])
    split = source.split(molecules)
    test = split["test"]
    if len(test) > max_reference_molecules:
        test = np.sort(np.random.default_rng(seed).choice(test, max_reference_molecules, replace=False))
    reference = EvaluationReference(
        geometry=geometry_samples(molecules.subset(test), dataset, source=f"{dataset} test split"),
        notes=[f"W1 against {len(test)} molecules of the {dataset} test split"],
    )
    if with_train_smiles:
        cache_file = Path(data_dir) / f"train_smiles_{source.cache_key()}.txt"
        smiles = cached_training_smiles(first_conformers(molecules, split["train"]), dataset, cache_file, progress)
        reference.train_smiles = set(smiles)
        reference.notes.append(f"novelty against {len(reference.train_smiles)} distinct training SMILES ({cache_file})")
    return reference

"""What a picture says about each molecule: EDM's bonds (the stability metric's), whether every atom is stable,
the number of fragments; and the RDKit molecule built from those bonds, with its SMILES when RDKit accepts it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaga.data.molecules import MoleculeSet
from gaga.metrics.bonds import Bonds, atom_valences, bond_rules, molecule_bonds, stable_atoms
from gaga.metrics.geometry import fragments_per_molecule

SMILES_CHARACTERS = 32  # longer SMILES are cut in labels


@dataclass(frozen=True)
class DescribedMolecule:
    """One molecule as drawn: atoms, coordinates (Angstrom), EDM bonds (local indices) and the stability verdict."""

    atomic_numbers: np.ndarray
    positions: np.ndarray
    bonds: Bonds
    stable: bool
    fragments: int

    @property
    def num_atoms(self) -> int:
        return len(self.atomic_numbers)


def describe(molecules: MoleculeSet, dataset: str, count: int | None = None) -> list[DescribedMolecule]:
    """The first `count` molecules (all when None) with their bonds, stability and fragment count."""
    rules = bond_rules(dataset)
    described = []
    for index in range(len(molecules) if count is None else min(count, len(molecules))):
        atomic_numbers, positions = molecules.molecule(index)
        bonds = molecule_bonds(atomic_numbers, positions, rules)
        types = rules.encoder.encode(atomic_numbers)
        stable = bool(stable_atoms(types, atom_valences(bonds, len(types)), rules).all())
        fragments = int(fragments_per_molecule(np.array([0, len(types)]), bonds)[0])
        described.append(DescribedMolecule(atomic_numbers, positions, bonds, stable, fragments))
    return described


def rdkit_molecule(molecule: DescribedMolecule, dataset: str):
    """(RDKit molecule, SMILES or None): sanitised when RDKit accepts it (the SMILES of all its fragments, hydrogens
    implicit), else the molecule as built, unsanitised (None: EDM's "invalid"). Built as the validity metric
    builds it."""
    from rdkit import Chem

    from gaga.metrics.rdkit_molecules import build_rdkit_molecule, quiet_rdkit, sanitized

    built = build_rdkit_molecule(
        molecule.atomic_numbers, None, molecule.bonds, single_bonds=bond_rules(dataset).rdkit_single_bonds
    )
    with quiet_rdkit():
        accepted = sanitized(Chem.Mol(built))
        if accepted is None:
            built.UpdatePropertyCache(strict=False)
            return built, None
        return accepted, Chem.MolToSmiles(Chem.RemoveHs(accepted))


def label(molecule: DescribedMolecule, smiles: str | None) -> str:
    """Two lines: the SMILES (cut to SMILES_CHARACTERS) or "invalid"; the atom count, fragments, stable or not."""
    text = "invalid" if smiles is None else smiles
    if len(text) > SMILES_CHARACTERS:
        text = text[: SMILES_CHARACTERS - 3] + "..."
    pieces = f", {molecule.fragments} fragments" if molecule.fragments > 1 else ""
    atoms = "1 atom" if molecule.num_atoms == 1 else f"{molecule.num_atoms} atoms"
    return f"{text}\n{atoms}{pieces}, {'stable' if molecule.stable else 'unstable'}"

"""RDKit molecules built from coordinates and EDM's inferred bonds, and EDM's SMILES for validity and novelty.

RDKit is imported inside the functions, so the rest of gaga works without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from gaga.data.molecules import MoleculeSet, to_molecule_set
from gaga.metrics.bonds import Bonds, bond_rules, encode_types, infer_bonds, molecule_bonds


@contextmanager
def quiet_rdkit():
    """Silence RDKit's per-molecule sanitisation messages inside the block."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def build_rdkit_molecule(
    atomic_numbers: np.ndarray, positions: np.ndarray | None, bonds: Bonds, single_bonds: bool = False
):
    """Unsanitised RDKit molecule with the given atoms, bonds (local atom indices) and, optionally, a conformer.

    `single_bonds` makes every bond single (EDM's GEOM-Drugs validity). Atoms keep their input order.
    """
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    bond_types = (None, Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)
    orders = np.ones_like(bonds.order) if single_bonds else bonds.order
    molecule = Chem.RWMol()
    for z in np.asarray(atomic_numbers).tolist():
        molecule.AddAtom(Chem.Atom(int(z)))
    for first, second, order in zip(bonds.first.tolist(), bonds.second.tolist(), orders.tolist(), strict=True):
        molecule.AddBond(first, second, bond_types[order])
    if positions is not None:
        conformer = Chem.Conformer(len(atomic_numbers))
        for index, (x, y, z) in enumerate(np.asarray(positions, dtype=np.float64).tolist()):
            conformer.SetAtomPosition(index, Point3D(x, y, z))
        molecule.AddConformer(conformer, assignId=True)
    return molecule.GetMol()


def sanitized(molecule):
    """The molecule sanitised in place, or None when RDKit rejects it (EDM's definition of an invalid molecule)."""
    from rdkit import Chem

    try:
        Chem.SanitizeMol(molecule)
    except ValueError:  # RDKit's sanitisation errors (valence, kekulisation) derive from ValueError
        return None
    return molecule


def rdkit_molecules(
    molecules: MoleculeSet,
    bonds: Bonds,
    single_bonds: bool = False,
    with_coordinates: bool = False,
    progress: bool = False,
    description: str = "RDKit",
) -> Iterator:
    """Each molecule sanitised with its inferred bonds (global atom indices), or None where RDKit rejects it."""
    from tqdm import tqdm

    bond_offsets = np.searchsorted(bonds.first, molecules.offsets)
    with quiet_rdkit():
        for index in tqdm(range(len(molecules)), disable=not progress, desc=description, unit="mol"):
            atom_offset = molecules.offsets[index]
            span = slice(bond_offsets[index], bond_offsets[index + 1])
            local = Bonds(bonds.first[span] - atom_offset, bonds.second[span] - atom_offset, bonds.order[span])
            atomic_numbers, positions = molecules.molecule(index)
            molecule = build_rdkit_molecule(
                atomic_numbers, positions if with_coordinates else None, local, single_bonds
            )
            yield sanitized(molecule)


def largest_fragment_smiles(molecule) -> str:
    """Canonical SMILES of a sanitised molecule's largest fragment (the first one on ties), as EDM reports validity."""
    from rdkit import Chem

    fragments = Chem.GetMolFrags(molecule, asMols=True)
    if len(fragments) > 1:
        molecule = max(fragments, key=lambda fragment: fragment.GetNumAtoms())
    return Chem.MolToSmiles(molecule)


def molecule_from_coordinates(atomic_numbers: np.ndarray, positions: np.ndarray, dataset: str = "qm9"):
    """RDKit molecule with 3D coordinates and EDM's full bond orders, sanitised when RDKit accepts it (for SDF)."""
    bonds = molecule_bonds(atomic_numbers, positions, bond_rules(dataset))
    molecule = build_rdkit_molecule(atomic_numbers, positions, bonds)
    with quiet_rdkit():
        if sanitized(molecule) is None:
            molecule.UpdatePropertyCache(strict=False)
    return molecule


def training_smiles(molecules: MoleculeSet | Iterable, dataset: str = "qm9", progress: bool = True) -> list[str]:
    """EDM's novelty reference: SMILES of each whole molecule (bonds inferred from its coordinates) RDKit accepts.

    EDM (qm9/rdkit_functions.py, compute_qm9_smiles) derives these from the training coordinates rather than
    the dataset's SMILES column, so that generated and training molecules go through the same bond inference.
    """
    from rdkit import Chem

    molecules = to_molecule_set(molecules, "training molecules")
    rules = bond_rules(dataset)
    types = encode_types(molecules, rules, "training molecules")
    bonds = infer_bonds(types, molecules.positions, molecules.offsets, rules)
    built = rdkit_molecules(molecules, bonds, rules.rdkit_single_bonds, progress=progress, description="train SMILES")
    return [Chem.MolToSmiles(molecule) for molecule in built if molecule is not None]

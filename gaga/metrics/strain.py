"""MMFF94 strain energy of a generated conformation: its energy minus that of the nearest MMFF minimum.

Reported per atom (kcal/mol/atom) so molecules of different sizes weigh alike; low means physically relaxed.
"""

from __future__ import annotations

MMFF_MAX_ITERATIONS = 2000


def mmff_strain_per_atom(molecule) -> float | None:
    """(E_as_given - E_after_MMFF_minimisation) / num_atoms in kcal/mol for a sanitised molecule with a conformer.

    None when MMFF cannot type the molecule or when any atom carries implicit hydrogens (the generated structure
    lacks atoms its bonds call for, so its energy would not describe what was generated). The input is not changed.
    """
    from rdkit import Chem
    from rdkit.Chem import rdForceFieldHelpers

    if any(atom.GetNumImplicitHs() for atom in molecule.GetAtoms()):
        return None
    if not rdForceFieldHelpers.MMFFHasAllMoleculeParams(molecule):
        return None
    molecule = Chem.Mol(molecule)
    properties = rdForceFieldHelpers.MMFFGetMoleculeProperties(molecule)
    force_field = rdForceFieldHelpers.MMFFGetMoleculeForceField(molecule, properties)
    energy_as_given = force_field.CalcEnergy()
    force_field.Minimize(maxIts=MMFF_MAX_ITERATIONS)
    return (energy_as_given - force_field.CalcEnergy()) / molecule.GetNumAtoms()

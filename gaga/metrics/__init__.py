"""Evaluation metrics for generated 3D molecules, defined as EDM defines them (see evaluation.py).

Importing this package does not import RDKit; the functions that need it import it when called.
"""

from gaga.metrics.evaluation import evaluate_molecules, geometry_samples
from gaga.metrics.rdkit_molecules import molecule_from_coordinates, training_smiles
from gaga.metrics.table import format_table

__all__ = ["evaluate_molecules", "format_table", "geometry_samples", "molecule_from_coordinates", "training_smiles"]

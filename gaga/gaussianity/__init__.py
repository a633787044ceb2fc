"""GAGA's statistical core: dataset variance, closed-form marginals, Gaussianity tests and the search for T*.

Plain numpy/torch; `find_t_star` is the entry point, `sample_reference_gaussian` draws the truncation prior.
"""

from gaga.gaussianity.blocks import FEATURES, POSITIONS, center_per_molecule, molecule_blocks
from gaga.gaussianity.closed_form import marginal_mean, marginal_variance, reference_std, sample_reference_gaussian
from gaga.gaussianity.functional import functional_along_t, gaussianity_functional
from gaga.gaussianity.result import TStarResult
from gaga.gaussianity.tstar import GaussianitySettings, find_t_star
from gaga.gaussianity.variance import VarianceEstimate, estimate_variance

__all__ = [
    "FEATURES",
    "POSITIONS",
    "GaussianitySettings",
    "TStarResult",
    "VarianceEstimate",
    "center_per_molecule",
    "estimate_variance",
    "find_t_star",
    "functional_along_t",
    "gaussianity_functional",
    "marginal_mean",
    "marginal_variance",
    "molecule_blocks",
    "reference_std",
    "sample_reference_gaussian",
]

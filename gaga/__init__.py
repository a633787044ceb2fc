"""gaga: EDM-family 3D molecule generation with Gaussianity-aware trajectory truncation (GAGA).

The library is importable without Hydra, W&B or RDKit; those are imported where they are used.
"""

__version__ = "0.1.0"

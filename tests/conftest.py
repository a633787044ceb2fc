"""Shared pytest fixtures: the real QM9 data (cached under <repo>/data) and its EDM split.

The first test session on a machine parses qm9pack once (about 10 s); later ones load the cache.
"""

from pathlib import Path

import numpy as np
import pytest

from gaga.data.molecules import MoleculeSet
from gaga.data.qm9 import edm_split, load_qm9

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


@pytest.fixture(scope="session")
def qm9() -> MoleculeSet:
    """All 130,831 QM9 molecules (with hydrogens), sorted by QM9 index."""
    return load_qm9(DATA_DIR)


@pytest.fixture(scope="session")
def qm9_train(qm9) -> MoleculeSet:
    """EDM's 100,000-molecule training split (seed 0)."""
    return qm9.subset(edm_split(len(qm9))["train"])


@pytest.fixture(scope="session")
def qm9_sample(qm9_train) -> MoleculeSet:
    """3,000 random training molecules (fixed seed): enough for statistics within 0.5 %."""
    return qm9_train.subset(np.random.default_rng(0).choice(len(qm9_train), 3000, replace=False))

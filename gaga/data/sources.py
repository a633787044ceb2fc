"""Dataset sources by name, for command lines that take `--data qm9|drugs` instead of a Hydra config.

A source has `name`, `encoder`, `properties` (name -> gaga.data.properties.Property), `load()`, `build()`,
`split(molecules)` and `cache_key()`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

SOURCES = {"qm9": "gaga.data.qm9.QM9", "drugs": "gaga.data.drugs.GeomDrugs"}


def source_for(name: str, data_dir: str | Path, **options):
    """The source called `name` ("qm9" or "drugs") reading its cache from `data_dir`."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}: use one of {sorted(SOURCES)}")
    module, _, cls = SOURCES[name].rpartition(".")
    return getattr(importlib.import_module(module), cls)(data_dir=data_dir, **options)

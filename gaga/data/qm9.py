"""QM9 from the `qm9pack` package: parse its CSV files once into a MoleculeSet cache; EDM's split.

qm9pack ships the 130,831 QM9 molecules EDM uses (unconverged ones removed), with B3LYP
coordinates as text. Parsing those strings is the slow part, so it happens once per machine.
"""

from __future__ import annotations

import logging
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from gaga.data.elements import ATOMIC_NUMBER, QM9_ATOMS
from gaga.data.molecules import CacheError, MoleculeSet
from gaga.data.properties import QM9_PROPERTIES

log = logging.getLogger(__name__)

QM9_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9_COLUMNS = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang", *(p.column for p in QM9_PROPERTIES.values())]
CACHE_LAYOUT = "properties-1"  # what the cache holds besides the molecules; a change rebuilds older caches
CACHE_NAME = "qm9.npz"
EDM_SPLIT = {"train": 100_000, "test_fraction": 0.1}
BUILD_COMMAND = "python -m gaga.data build qm9"


def qm9pack_data_dir() -> Path:
    """Folder holding qm9pack's CSV files (found without importing qm9pack, whose import needs pkg_resources)."""
    spec = find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("qm9pack is not installed: pip install qm9pack (it ships the QM9 data)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _source_fingerprint(folder: Path) -> str:
    return ",".join([CACHE_LAYOUT, *(f"{name}:{(folder / name).stat().st_size}" for name in QM9_PARTS)])


def _parse_part(path: Path) -> tuple[MoleculeSet, np.ndarray]:
    """One qm9pack CSV -> (molecules, their QM9 indices); ValueError naming the file and line when damaged."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, usecols=QM9_COLUMNS)
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(
            f"{path}: cannot read the CSV ({error}); reinstall qm9pack: pip install --force-reinstall qm9pack"
        ) from error
    if frame.empty:
        raise ValueError(f"{path}: no rows; reinstall qm9pack: pip install --force-reinstall qm9pack")
    declared = frame["N_atoms"].to_numpy()
    n_coords = frame["XYZ_Ang"].str.count(r"\[").to_numpy() - 1
    n_elements = frame["Elements"].str.count(",").to_numpy() + 1
    bad = np.flatnonzero((n_coords != declared) | (n_elements != declared))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"{path}, line {row + 2} (QM9 index {frame['Index'].iloc[row]}): N_atoms={declared[row]} but "
            f"{n_elements[row]} elements and {n_coords[row]} coordinate triples; the file is damaged, "
            "reinstall qm9pack: pip install --force-reinstall qm9pack"
        )
    strip = str.maketrans("", "", "[]' ")
    coords = np.array(",".join(frame["XYZ_Ang"]).translate(strip).split(","), dtype=np.float64)
    symbols = np.array(",".join(frame["Elements"]).translate(strip).split(","))
    unknown = sorted(set(np.unique(symbols)) - set(ATOMIC_NUMBER))
    if unknown:
        raise ValueError(f"{path}: unknown element symbols {unknown} in column Elements")
    lookup = {s: ATOMIC_NUMBER[s] for s in np.unique(symbols)}
    molecules = MoleculeSet(
        positions=coords.reshape(-1, 3),
        atomic_numbers=np.array([lookup[s] for s in symbols], dtype=np.int8),
        offsets=np.concatenate([[0], np.cumsum(declared)]),
        smiles=frame["SMILES"].astype(str).tolist(),
        properties={name: _property_column(frame, path, name) for name in QM9_PROPERTIES},
    )
    molecules.validate(str(path))
    return molecules, frame["Index"].to_numpy()


def _property_column(frame, path: Path, name: str) -> np.ndarray:
    """One property of every row, in gaga's units (gaga.data.properties); ValueError naming a line that holds no
    number."""
    import pandas as pd

    prop = QM9_PROPERTIES[name]
    values = pd.to_numeric(frame[prop.column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"{path}, line {row + 2} (QM9 index {frame['Index'].iloc[row]}): column {prop.column} is "
            f"{frame[prop.column].iloc[row]!r}, not a number; reinstall qm9pack: pip install --force-reinstall qm9pack"
        )
    return values * prop.factor


def concat(parts: list[MoleculeSet]) -> MoleculeSet:
    """One MoleculeSet from several, in order (molecule ids renumbered)."""
    counts = np.concatenate([p.num_atoms for p in parts])
    return MoleculeSet(
        positions=np.concatenate([p.positions for p in parts]),
        atomic_numbers=np.concatenate([p.atomic_numbers for p in parts]),
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        smiles=[s for p in parts for s in p.smiles],
        properties={name: np.concatenate([p.properties[name] for p in parts]) for name in parts[0].properties},
    )


def build_qm9_cache(data_dir: str | Path, source_dir: Path | None = None) -> Path:
    """Parse qm9pack's CSV files into `<data_dir>/qm9.npz` (sorted by QM9 index) and return its path."""
    source_dir = source_dir or qm9pack_data_dir()
    start = time.perf_counter()
    parts, indices = zip(*(_parse_part(source_dir / name) for name in QM9_PARTS), strict=True)
    molecules = concat(list(parts))
    order = np.argsort(np.concatenate(indices), kind="stable")
    molecules = molecules.subset(order)
    molecules.mol_ids = np.arange(len(molecules))
    path = Path(data_dir) / CACHE_NAME
    molecules.save(path, source=_source_fingerprint(source_dir))
    log.info("built %s: %d molecules in %.1f s", path, len(molecules), time.perf_counter() - start)
    return path


def load_qm9(data_dir: str | Path, source_dir: Path | None = None) -> MoleculeSet:
    """All QM9 molecules, from the cache; (re)builds the cache when missing, stale or corrupt.

    Without qm9pack (e.g. a GPU machine that was sent only the cache) an existing cache is used as it is.
    """
    path = Path(data_dir) / CACHE_NAME
    if source_dir is None and find_spec("qm9pack") is None and path.exists():
        log.info("qm9pack is not installed: using %s without checking it against the source files", path)
        return MoleculeSet.load(path, rebuild_hint="Install qm9pack to rebuild it: pip install qm9pack")[0]
    source_dir = source_dir or qm9pack_data_dir()
    hint = f"Rebuilding it from {source_dir} (or run: {BUILD_COMMAND})."
    try:
        molecules, meta = MoleculeSet.load(path, rebuild_hint=hint)
        if meta.get("source") != _source_fingerprint(source_dir):
            raise CacheError(f"{path}: cache is stale (qm9pack files changed). {hint}")
        return molecules
    except CacheError as problem:
        if path.exists():
            log.warning("%s", problem)
        build_qm9_cache(data_dir, source_dir)
        return MoleculeSet.load(path, rebuild_hint=hint)[0]


def edm_split(num_molecules: int, seed: int = 0, num_train: int = EDM_SPLIT["train"]) -> dict[str, np.ndarray]:
    """EDM's QM9 split: a seeded permutation cut into train / valid / test (100,000 / 17,748 / 13,083)."""
    num_test = int(EDM_SPLIT["test_fraction"] * num_molecules)
    num_valid = num_molecules - num_train - num_test
    if num_valid <= 0:
        raise ValueError(f"cannot split {num_molecules} molecules into {num_train} train and {num_test} test")
    perm = np.random.RandomState(seed).permutation(num_molecules)
    train, valid, test = np.split(perm, [num_train, num_train + num_valid])
    return {"train": train, "valid": valid, "test": test}


class QM9:
    """The QM9 source for the data module: element encoder, cached molecules with their properties, EDM's seeded
    split."""

    name = "qm9"
    properties = QM9_PROPERTIES

    def __init__(self, data_dir: str | Path = "data", split_seed: int = 0):
        self.data_dir, self.split_seed, self.encoder = Path(data_dir), int(split_seed), QM9_ATOMS

    def load(self) -> MoleculeSet:
        return load_qm9(self.data_dir)

    def build(self) -> Path:
        return build_qm9_cache(self.data_dir)

    def split(self, molecules: MoleculeSet) -> dict[str, np.ndarray]:
        return edm_split(len(molecules), seed=self.split_seed)

    def cache_key(self) -> str:
        return f"qm9-seed{self.split_seed}"

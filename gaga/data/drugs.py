"""GEOM-Drugs: read the files a user downloads into a MoleculeSet cache, and split it by molecule.

Two inputs: EDM's processed .npy files, or GEOM's raw rdkit_folder (read by `gaga.data.rdkit_io`); either way
the 30 lowest-energy conformers per molecule, 16 elements, as EDM uses it. Nobody can ship the data (tens of GB).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from gaga.data.elements import DRUGS_ATOMS, describe_element
from gaga.data.molecules import CacheError, MoleculeSet
from gaga.data.rdkit_io import SUMMARY_NAME, find_rdkit_folder, read_rdkit_folder

log = logging.getLogger(__name__)

CONFORMERS_PER_MOLECULE = 30
BUILD_COMMAND = "python -m gaga.data build drugs --source PATH"
# EDM's main_geom_drugs.py: load_split_data(val_proportion=0.1, test_proportion=0.1)
EDM_VALID_FRACTION, EDM_TEST_FRACTION = 0.1, 0.1
REBUILD_EDM = "the file is damaged or from another build: rerun EDM's build_geom_dataset.py, or use GEOM's rdkit_folder"
WHERE_TO_GET = (
    "Get them: GEOM (Axelrod & Gomez-Bombarelli, Sci. Data 9, 185 (2022)): rdkit_folder.tar.gz from the Harvard "
    "Dataverse, doi:10.7910/DVN/JNGTDF (about 50 GB; tar -xzf it); or EDM's processed .npy files, made by its "
    "build_geom_dataset.py as its data/geom/README.md says (github.com/ehoogeboom/e3_diffusion_for_molecules)."
)
BLOCK_ROWS = 1 << 22  # rows of EDM's memory-mapped table handled at a time, to bound memory


class DrugsDataMissing(FileNotFoundError):
    """Neither a GEOM-Drugs cache nor downloaded source files; the message says what to get and how to build."""


def edm_file_names(conformers_per_molecule: int = CONFORMERS_PER_MOLECULE) -> tuple[str, str, str]:
    """EDM's output names: conformer table, atoms per conformer, SMILES (build_geom_dataset.py, with hydrogens)."""
    k = conformers_per_molecule
    return f"geom_drugs_{k}.npy", f"geom_drugs_n_{k}.npy", "geom_drugs_smiles.txt"


def cache_path(data_dir: str | Path, conformers_per_molecule: int = CONFORMERS_PER_MOLECULE) -> Path:
    return Path(data_dir) / f"geom_drugs_{conformers_per_molecule}.npz"


# --- EDM's processed files -------------------------------------------------------------------------


def _open_npy(path: Path, shape_text: str, ndim: int, columns: int | None = None) -> np.ndarray:
    """A numeric .npy array (memory-mapped), checked for its rank and column count."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: unreadable .npy, truncated or damaged ({error}); {REBUILD_EDM}") from error
    if array.ndim != ndim or (columns is not None and array.shape[1] != columns) or array.dtype.kind not in "fiu":
        raise ValueError(
            f"{path}: expected {shape_text}, found a {array.dtype} array of shape {array.shape}; {REBUILD_EDM}"
        )
    return array


def _check_block(block: np.ndarray, conformer: np.ndarray, path: Path, first_row: int) -> None:
    """ValueError naming the row and conformer of the first bad [conformer id, Z, x, y, z] row of a block."""
    ids, z = block[:, 0], block[:, 1]
    problems = (
        (
            ids != conformer,
            lambda r: f"conformer id {ids[r]:g}, but the atom counts put this row in conformer {conformer[r]}",
        ),
        (~(np.isfinite(z) & (z == np.round(z))), lambda r: f"atomic number {z[r]} is not a whole number"),
        (~np.isin(z, DRUGS_ATOMS.atomic_numbers), lambda r: describe_element(int(z[r]))),
        (~np.isfinite(block[:, 2:]).all(axis=1), lambda r: "NaN or infinite coordinates"),
    )
    for bad, detail in problems:
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}, row {first_row + r} (conformer {conformer[r]}): {detail(r)}; {REBUILD_EDM}")


def _scan_table(table: np.ndarray, offsets: np.ndarray, path: Path, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated (int8 atomic numbers, float32 positions) of EDM's table, read in blocks to bound memory."""
    atomic_numbers = np.empty(len(table), np.int8)
    positions = np.empty((len(table), 3), np.float32)
    for start in range(0, len(table), block_rows):
        block = np.asarray(table[start : start + block_rows], dtype=np.float64)
        conformer = np.searchsorted(offsets, np.arange(start, start + len(block)), side="right") - 1
        _check_block(block, conformer, path, start)
        atomic_numbers[start : start + len(block)] = block[:, 1]
        positions[start : start + len(block)] = block[:, 2:]
    return atomic_numbers, positions


def _ragged_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[i] .. starts[i] + lengths[i]."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def molecule_runs(atomic_numbers: np.ndarray, offsets: np.ndarray, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Molecule id of each conformer: consecutive conformers with the same atom sequence are one molecule.

    EDM's table numbers conformers, not molecules; conformers of one molecule are consecutive and share their atoms.
    Adjacent molecules with the same atom sequence (e.g. stereoisomers) merge, which only makes a split stricter.
    """
    counts = np.diff(offsets)
    starts = np.ones(len(counts), dtype=bool)
    candidates = np.flatnonzero(counts[1:] == counts[:-1]) + 1
    block = max(1, block_rows // int(counts.max(initial=1)))  # conformers compared at a time
    for lo in range(0, len(candidates), block):
        chosen = candidates[lo : lo + block]
        rows = _ragged_rows(offsets[chosen], counts[chosen])
        differs = atomic_numbers[rows] != atomic_numbers[rows - np.repeat(counts[chosen], counts[chosen])]
        group_starts = np.concatenate([[0], np.cumsum(counts[chosen])[:-1]])
        starts[chosen] = np.add.reduceat(differs, group_starts) > 0
    return np.cumsum(starts) - 1


def read_edm_npy(
    folder: str | Path, conformers_per_molecule: int = CONFORMERS_PER_MOLECULE, block_rows: int = BLOCK_ROWS
) -> MoleculeSet:
    """EDM's geom_drugs_<k>.npy, geom_drugs_n_<k>.npy and geom_drugs_smiles.txt as a MoleculeSet of conformers.

    mol_ids come from `molecule_runs`; each conformer gets its molecule's SMILES when the molecule count matches
    the SMILES file (else a warning, and no SMILES: merged stereoisomers cannot be told apart). The table is
    memory-mapped and read `block_rows` rows at a time.
    """
    table_path, counts_path, smiles_path = (Path(folder) / name for name in edm_file_names(conformers_per_molecule))
    table = _open_npy(table_path, "rows of [conformer id, atomic number, x, y, z] (shape [atoms, 5])", 2, 5)
    stored = _open_npy(counts_path, "atoms per conformer (shape [conformers])", 1)
    counts = np.asarray(stored, dtype=np.int64)
    if (counts != stored).any() or (counts < 1).any() or counts.sum() != len(table):
        raise ValueError(
            f"{counts_path}: atom counts must be whole numbers >= 1 summing to the rows of {table_path.name}, but "
            f"they sum to {stored.sum():g} (min {stored.min(initial=0):g}) and it has {len(table)} rows; {REBUILD_EDM}"
        )
    offsets = np.concatenate([[0], np.cumsum(counts)])
    atomic_numbers, positions = _scan_table(table, offsets, table_path, block_rows)
    mol_ids = molecule_runs(atomic_numbers, offsets, block_rows)
    lines = smiles_path.read_text().splitlines()
    num_molecules = int(mol_ids[-1]) + 1 if len(mol_ids) else 0
    if num_molecules > len(lines):
        raise ValueError(
            f"{smiles_path}: {len(lines)} SMILES but {table_path.name} holds at least {num_molecules} molecules; "
            f"{REBUILD_EDM}"
        )
    if num_molecules < len(lines):
        log.warning(
            "%s: %d SMILES for %d conformer groups (adjacent molecules with identical atoms merged); "
            "conformers get no SMILES. GEOM's rdkit_folder gives exact molecules.",
            smiles_path,
            len(lines),
            num_molecules,
        )
    molecules = MoleculeSet(
        positions=positions,
        atomic_numbers=atomic_numbers,
        offsets=offsets,
        smiles=[lines[i] for i in mol_ids] if num_molecules == len(lines) else [],
        mol_ids=mol_ids,
    )
    molecules.validate(str(table_path))
    return molecules


# --- cache ----------------------------------------------------------------------------------------


def find_source(
    source: str | Path | None, conformers_per_molecule: int = CONFORMERS_PER_MOLECULE
) -> tuple[str, Path] | None:
    """("rdkit_folder" | "edm_npy", folder) found at `source`, or None; the rdkit_folder wins (exact molecules)."""
    if source is None:
        return None
    source = Path(source)
    folder = find_rdkit_folder(source)
    if folder is not None:
        return "rdkit_folder", folder
    if all((source / name).is_file() for name in edm_file_names(conformers_per_molecule)):
        return "edm_npy", source
    return None


def _fingerprint(form: str, folder: Path, conformers_per_molecule: int) -> str:
    """Form, k, and size and modification time of each source file: any edit makes the cache stale."""
    names = (SUMMARY_NAME,) if form == "rdkit_folder" else edm_file_names(conformers_per_molecule)
    stats = [(folder / name).stat() for name in names]
    files = ",".join(f"{name}:{stat.st_size}:{stat.st_mtime_ns}" for name, stat in zip(names, stats, strict=True))
    return f"{form}:{conformers_per_molecule}:{files}"


def missing_message(data_dir: str | Path, source: str | Path | None, conformers_per_molecule: int, reason: str) -> str:
    """What is missing, where it looked, which files to get, where from, and the build command."""
    names = edm_file_names(conformers_per_molecule)
    npy = ", ".join(names)
    looked = f"in {Path(source).resolve()}" if source is not None else "nowhere (no source folder was given)"
    if source is not None and not Path(source).is_dir():
        reason += f"; the folder {source} does not exist (set paths.drugs_source=FOLDER)"
    elif source is not None:
        missing = [name for name in names if not (Path(source) / name).is_file()]
        if len(missing) < len(names):
            reason += f"; {source} lacks {', '.join(missing)} of EDM's processed files (download it there)"
    return (
        f"GEOM-Drugs is not available: {reason}\n"
        f"Looked for the cache {cache_path(data_dir, conformers_per_molecule).resolve()} and for downloaded files "
        f"{looked}. Needed, either:\n"
        f"  - EDM's processed files in one folder: {npy}\n"
        f"  - GEOM's raw rdkit_folder (the folder itself or its parent): {SUMMARY_NAME} and drugs/*.pickle\n"
        f"{WHERE_TO_GET}\n"
        f"Then build the cache once: {BUILD_COMMAND}"
    )


def build_drugs_cache(
    source: str | Path | None,
    data_dir: str | Path,
    conformers_per_molecule: int = CONFORMERS_PER_MOLECULE,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Read GEOM-Drugs from `source` (either form, auto-detected) into `<data_dir>/geom_drugs_<k>.npz`.

    Everything is validated before the atomic write, so a failed build leaves an existing cache untouched.
    `workers` > 1 reads rdkit_folder pickles in parallel processes.
    """
    found = find_source(source, conformers_per_molecule)
    if found is None:
        raise DrugsDataMissing(missing_message(data_dir, source, conformers_per_molecule, "no source files found"))
    form, folder = found
    start = time.perf_counter()
    log.info("reading GEOM-Drugs (%s) from %s", form, folder)
    if form == "rdkit_folder":
        molecules = read_rdkit_folder(folder, conformers_per_molecule, progress=progress, workers=workers)
    else:
        molecules = read_edm_npy(folder, conformers_per_molecule)
    path = cache_path(data_dir, conformers_per_molecule)
    molecules.save(
        path, form=form, source=str(folder.resolve()), fingerprint=_fingerprint(form, folder, conformers_per_molecule)
    )
    log.info(
        "built %s: %d conformers of %d molecules in %.1f s",
        path,
        len(molecules),
        len(np.unique(molecules.mol_ids)),
        time.perf_counter() - start,
    )
    return path


def load_drugs(
    data_dir: str | Path,
    source: str | Path | None = None,
    conformers_per_molecule: int = CONFORMERS_PER_MOLECULE,
    progress: bool = True,
    workers: int = 1,
) -> MoleculeSet:
    """All cached GEOM-Drugs conformers; (re)built from `source` when missing, stale or corrupt.

    With no source files at hand (downloads deleted after the build), the cache is used as it is.
    """
    path = cache_path(data_dir, conformers_per_molecule)
    found = find_source(source, conformers_per_molecule)
    try:
        molecules, meta = MoleculeSet.load(path, rebuild_hint=f"Rebuild it: {BUILD_COMMAND}")
        if found is not None and meta.get("fingerprint") != _fingerprint(*found, conformers_per_molecule):
            raise CacheError(f"{path}: cache is stale (built from {meta.get('source')}, source files changed)")
        return molecules
    except CacheError as problem:
        if found is None:
            raise DrugsDataMissing(missing_message(data_dir, source, conformers_per_molecule, str(problem))) from None
        if path.exists():
            log.warning("%s; rebuilding from %s", problem, found[1])
        build_drugs_cache(found[1], data_dir, conformers_per_molecule, progress=progress, workers=workers)
        return MoleculeSet.load(path, rebuild_hint=f"Rebuild it: {BUILD_COMMAND}")[0]


# --- split ----------------------------------------------------------------------------------------


def split_by_molecule(
    mol_ids: np.ndarray,
    seed: int = 0,
    valid_fraction: float = EDM_VALID_FRACTION,
    test_fraction: float = EDM_TEST_FRACTION,
) -> dict[str, np.ndarray]:
    """Conformer indices of train / valid / test; every conformer of a molecule lands in the same split.

    As EDM's load_split_data but over molecules: a seeded permutation of molecules, the first
    int(n * valid_fraction) valid, the next int(n * test_fraction) test, the rest train.
    """
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(
            f"split fractions valid={valid_fraction}, test={test_fraction} must be in [0, 1) and sum to less than 1"
        )
    molecule, conformer_molecule = np.unique(np.asarray(mol_ids), return_inverse=True)
    n = len(molecule)
    n_valid, n_test = int(n * valid_fraction), int(n * test_fraction)
    permutation = np.random.RandomState(seed).permutation(n)
    parts = dict(zip(("valid", "test", "train"), np.split(permutation, [n_valid, n_valid + n_test]), strict=True))
    empty = [name for name, part in parts.items() if len(part) == 0]
    if empty:
        raise ValueError(
            f"split {empty} would be empty: {n} molecules with valid_fraction={valid_fraction}, "
            f"test_fraction={test_fraction}; use more molecules or larger fractions"
        )
    split_of_molecule = np.empty(n, dtype=np.int8)
    for code, name in enumerate(("train", "valid", "test")):
        split_of_molecule[parts[name]] = code
    split_of_conformer = split_of_molecule[conformer_molecule]
    return {name: np.flatnonzero(split_of_conformer == code) for code, name in enumerate(("train", "valid", "test"))}


class GeomDrugs:
    """The GEOM-Drugs source for the data module: element encoder, cached conformers and the by-molecule split."""

    name = "drugs"
    properties: dict = {}  # GEOM carries no molecular properties to condition on

    def __init__(
        self,
        data_dir: str | Path = "data",
        source_dir: str | Path | None = None,
        split_seed: int = 0,
        valid_fraction: float = EDM_VALID_FRACTION,
        test_fraction: float = EDM_TEST_FRACTION,
        conformers_per_molecule: int = CONFORMERS_PER_MOLECULE,
        workers: int = 1,
    ):
        self.data_dir, self.source_dir, self.encoder = Path(data_dir), source_dir, DRUGS_ATOMS
        self.split_seed, self.valid_fraction, self.test_fraction = int(split_seed), valid_fraction, test_fraction
        self.conformers_per_molecule, self.workers = int(conformers_per_molecule), int(workers)

    def load(self) -> MoleculeSet:
        return load_drugs(self.data_dir, self.source_dir, self.conformers_per_molecule, workers=self.workers)

    def build(self) -> Path:
        return build_drugs_cache(self.source_dir, self.data_dir, self.conformers_per_molecule, workers=self.workers)

    def split(self, molecules: MoleculeSet) -> dict[str, np.ndarray]:
        return split_by_molecule(molecules.mol_ids, self.split_seed, self.valid_fraction, self.test_fraction)

    def cache_key(self) -> str:
        return (
            f"drugs{self.conformers_per_molecule}-seed{self.split_seed}"
            f"-valid{self.valid_fraction:g}-test{self.test_fraction:g}"
        )

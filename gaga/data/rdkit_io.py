"""Reader of GEOM's raw `rdkit_folder`: summary_drugs.json plus one pickle of RDKit conformers per molecule.

Keeps each molecule's lowest-'totalenergy' conformers, selected as EDM's build_geom_dataset.py selects them.
"""

from __future__ import annotations

import json
import logging
import pickle
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial
from itertools import repeat
from pathlib import Path

import numpy as np

from gaga.data.elements import describe_element, first_unknown_element
from gaga.data.molecules import MoleculeSet

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary_drugs.json"
REEXTRACT = "re-extract GEOM's rdkit_folder.tar.gz (tar -xzf rdkit_folder.tar.gz) and rebuild"


def find_rdkit_folder(source: Path) -> Path | None:
    """The rdkit_folder at `source` or directly under it (the folder holding summary_drugs.json), else None."""
    for folder in (source, source / "rdkit_folder"):
        if (folder / SUMMARY_NAME).is_file():
            return folder
    return None


def read_summary(folder: Path) -> list[tuple[str, Path]]:
    """(SMILES, pickle file) of every molecule in summary_drugs.json order; entries without a pickle are skipped."""
    path = folder / SUMMARY_NAME
    try:
        with open(path) as handle:
            summary = json.load(handle)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the JSON summary ({error}); {REEXTRACT}") from error
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object of SMILES -> molecule summary; {REEXTRACT}")
    entries = [(smiles, info.get("pickle_path")) for smiles, info in summary.items() if isinstance(info, dict)]
    molecules = [(smiles, folder / relative) for smiles, relative in entries if relative]
    if len(molecules) < len(summary):
        log.info(
            "%s: %d of %d entries have no pickle_path (no conformers); skipped",
            path,
            len(summary) - len(molecules),
            len(summary),
        )
    return molecules


def lowest_energy_conformers(smiles: str, pickle_path: Path, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers [k, n] and positions [k, n, 3] (Angstrom) of the `keep` lowest-energy conformers, lowest first.

    Like EDM: `np.argsort(totalenergy)[:keep]` (numpy's default sort, so ties resolve as in EDM). Unpickling runs
    code from the file: build only from a GEOM download you trust.
    """
    where = f"{pickle_path} (molecule {smiles})"
    if not pickle_path.is_file():
        raise ValueError(f"{where}: pickle file listed in {SUMMARY_NAME} is missing; {REEXTRACT}")
    try:
        with open(pickle_path, "rb") as handle:
            record = pickle.load(handle)
        conformers = record["conformers"]
        energies = np.array([conformer["totalenergy"] for conformer in conformers], dtype=np.float64)
    except Exception as error:  # unpickling raises many types; all mean a damaged or foreign file
        raise ValueError(f"{where}: unreadable GEOM pickle ({type(error).__name__}: {error}); {REEXTRACT}") from error
    arrays = [
        _conformer_arrays(conformers[i], f"{where}, conformer {i} (geom_id {conformers[i].get('geom_id')})")
        for i in np.argsort(energies)[:keep]
    ]
    if not arrays:
        return np.zeros((0, 0), np.int8), np.zeros((0, 0, 3), np.float32)
    sizes = {len(z) for z, _ in arrays}
    if len(sizes) > 1:
        raise ValueError(f"{where}: its conformers have different atom counts {sorted(sizes)}; {REEXTRACT}")
    return np.stack([z for z, _ in arrays]), np.stack([xyz for _, xyz in arrays])


def _conformer_arrays(conformer: dict, record_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(int8 atomic numbers, float32 positions) of one GEOM conformer dict, validated."""
    try:
        mol = conformer["rd_mol"]
        z = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=np.int64)
        xyz = mol.GetConformer().GetPositions()
    except Exception as error:  # a missing key or an rd_mol without 3D conformer
        raise ValueError(f"{record_name}: no RDKit molecule with a 3D conformer ({error}); {REEXTRACT}") from error
    bad = first_unknown_element(z)
    if bad is not None:
        raise ValueError(f"{record_name}, atom {bad}: {describe_element(int(z[bad]))}; {REEXTRACT}")
    if not np.isfinite(xyz).all():
        raise ValueError(f"{record_name}: NaN or infinite coordinates; {REEXTRACT}")
    return z.astype(np.int8), xyz.astype(np.float32)


def read_rdkit_folder(
    folder: Path, conformers_per_molecule: int = 30, progress: bool = True, workers: int = 1
) -> MoleculeSet:
    """Every molecule's lowest-energy conformers as one MoleculeSet, each conformer with its molecule's SMILES.

    mol_ids number the molecules in summary order, skipping those without conformers; `workers` > 1 reads the
    pickles in that many processes.
    """
    from tqdm import tqdm

    summary = read_summary(folder)
    jobs = ([smiles for smiles, _ in summary], [path for _, path in summary], repeat(conformers_per_molecule))
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        mapper = partial(pool.map, chunksize=64) if pool else map
        results = list(tqdm(mapper(lowest_energy_conformers, *jobs), total=len(summary), disable=not progress))
    kept = [(smiles, z, xyz) for (smiles, _), (z, xyz) in zip(summary, results, strict=True) if len(xyz)]
    if len(kept) < len(summary):
        log.info("%s: %d molecules without conformers skipped", folder, len(summary) - len(kept))
    if not kept:
        raise ValueError(f"{folder / SUMMARY_NAME}: no molecule with conformers; {REEXTRACT}")
    per_molecule = np.array([len(xyz) for _, _, xyz in kept])
    molecules = MoleculeSet(
        positions=np.concatenate([xyz.reshape(-1, 3) for _, _, xyz in kept]),
        atomic_numbers=np.concatenate([z.reshape(-1) for _, z, _ in kept]),
        offsets=np.concatenate([[0], np.cumsum(np.repeat([z.shape[1] for _, z, _ in kept], per_molecule))]),
        smiles=[smiles for smiles, _, xyz in kept for _ in range(len(xyz))],
        mol_ids=np.repeat(np.arange(len(kept)), per_molecule),
    )
    molecules.validate(str(folder))
    return molecules

"""MoleculeSet: many molecules in flat arrays, and its versioned, atomically written npz cache.

Atoms of molecule i are rows offsets[i]:offsets[i+1] of `positions` (float32, Angstrom) and
`atomic_numbers` (int8). `mol_ids` groups conformers of one molecule (GEOM); QM9 has one each. `properties` maps a
property name to its value per molecule (QM9's, in the units of gaga.data.properties; empty for GEOM).
`to_molecule_set` turns the (atomic numbers, positions) pairs that generators and file readers produce into one,
with one set of checks, so every entry point rejects the same bad input the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gaga.atomic_files import DigestError, atomic_open, locked, verify_digest, write_digest

CACHE_VERSION = 1
MAX_ATOMIC_NUMBER = 118


class CacheError(RuntimeError):
    """A cache file that is missing, stale or corrupt; the message says how to rebuild it."""


@dataclass
class MoleculeSet:
    positions: np.ndarray
    atomic_numbers: np.ndarray
    offsets: np.ndarray
    smiles: list[str] = field(default_factory=list)
    mol_ids: np.ndarray | None = None
    properties: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.ascontiguousarray(self.positions, dtype=np.float32).reshape(-1, 3)
        self.atomic_numbers = np.ascontiguousarray(self.atomic_numbers, dtype=np.int8)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if self.mol_ids is None:
            self.mol_ids = np.arange(len(self), dtype=np.int64)
        self.properties = {name: np.asarray(values, dtype=np.float64) for name, values in self.properties.items()}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic numbers, positions) of molecule i."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.atomic_numbers[lo:hi].astype(np.int64), self.positions[lo:hi]

    def __iter__(self):
        return (self.molecule(i) for i in range(len(self)))

    def subset(self, indices: np.ndarray) -> MoleculeSet:
        """The molecules at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = self.num_atoms[indices]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        atom_rows = np.repeat(self.offsets[indices] - offsets[:-1], counts) + np.arange(offsets[-1])
        return MoleculeSet(
            positions=self.positions[atom_rows],
            atomic_numbers=self.atomic_numbers[atom_rows],
            offsets=offsets,
            smiles=[self.smiles[i] for i in indices] if self.smiles else [],
            mol_ids=self.mol_ids[indices],
            properties={name: values[indices] for name, values in self.properties.items()},
        )

    def without_hydrogen(self) -> MoleculeSet:
        """The same molecules with every hydrogen atom removed."""
        keep = self.atomic_numbers != 1
        counts = np.add.reduceat(keep.astype(np.int64), self.offsets[:-1]) if len(self) else np.zeros(0, int)
        counts[self.num_atoms == 0] = 0
        return MoleculeSet(
            positions=self.positions[keep],
            atomic_numbers=self.atomic_numbers[keep],
            offsets=np.concatenate([[0], np.cumsum(counts)]),
            smiles=list(self.smiles),
            mol_ids=self.mol_ids,
            properties=self.properties,
        )

    def validate(self, source: str) -> None:
        """Raise ValueError naming `source` and the first bad molecule if the arrays are inconsistent."""
        if len(self) < 1:
            raise ValueError(f"{source}: no molecules")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.positions) or (np.diff(self.offsets) < 0).any():
            raise ValueError(f"{source}: offsets do not partition the {len(self.positions)} atoms")
        if len(self.atomic_numbers) != len(self.positions):
            raise ValueError(f"{source}: {len(self.atomic_numbers)} atomic numbers for {len(self.positions)} positions")
        bad_atoms = ~np.isfinite(self.positions).all(axis=1)
        if bad_atoms.any():
            mol = int(np.searchsorted(self.offsets, np.flatnonzero(bad_atoms)[0], side="right") - 1)
            raise ValueError(f"{source}: molecule {mol} has NaN or infinite coordinates; remove it or fix the record")
        if self.smiles and len(self.smiles) != len(self):
            raise ValueError(f"{source}: {len(self.smiles)} SMILES for {len(self)} molecules")
        for name, values in self.properties.items():
            if values.shape != (len(self),):
                raise ValueError(f"{source}: property {name!r} has shape {values.shape} for {len(self)} molecules")

    # --- cache -------------------------------------------------------------------------------

    def save(self, path: str | Path, **meta) -> None:
        """Write an npz cache atomically (temp file + rename; a failure leaves the old file intact) and its digest."""
        with locked(path):  # another process sharing data/ never sees this file with another one's digest
            with atomic_open(path, binary=True) as handle:
                np.savez_compressed(
                    handle,
                    version=np.array(CACHE_VERSION),
                    positions=self.positions,
                    atomic_numbers=self.atomic_numbers,
                    offsets=self.offsets,
                    mol_ids=self.mol_ids,
                    smiles=np.array("\n".join(self.smiles)),
                    **{f"property_{name}": values for name, values in self.properties.items()},
                    **{f"meta_{k}": np.asarray(v) for k, v in meta.items()},
                )
            write_digest(path)

    @classmethod
    def load(cls, path: str | Path, rebuild_hint: str) -> tuple[MoleculeSet, dict]:
        """Read a cache written by `save`; CacheError (with `rebuild_hint`) when missing, stale, corrupt or changed
        since it was written (its digest)."""
        path = Path(path)
        if not path.exists():
            raise CacheError(f"{path}: cache not found. {rebuild_hint}")
        try:
            with locked(path):  # not while another process replaces the file and its digest
                verify_digest(path)
                npz = dict(np.load(path, allow_pickle=False))
            version = int(npz["version"])
            if version != CACHE_VERSION:
                raise CacheError(
                    f"{path}: cache version {version}, this gaga reads version {CACHE_VERSION}. {rebuild_hint}"
                )
            text = str(npz["smiles"])
            molecules = cls(
                positions=npz["positions"],
                atomic_numbers=npz["atomic_numbers"],
                offsets=npz["offsets"],
                smiles=text.split("\n") if text else [],
                mol_ids=npz["mol_ids"],
                properties={k[9:]: v for k, v in npz.items() if k.startswith("property_")},
            )
            meta = {k[5:]: v.item() if v.ndim == 0 else v for k, v in npz.items() if k.startswith("meta_")}
        except CacheError:
            raise
        except DigestError as error:
            raise CacheError(f"{error}. {rebuild_hint}") from None
        except Exception as error:  # zip, pickle or key errors all mean the file is damaged
            raise CacheError(f"{path}: cache is corrupt ({type(error).__name__}: {error}). {rebuild_hint}") from error
        try:
            molecules.validate(str(path))
        except ValueError as error:
            raise CacheError(f"{error}. {rebuild_hint}") from error
        return molecules, meta


def to_molecule_set(
    molecules: MoleculeSet | Iterable[tuple[np.ndarray, np.ndarray]], source: str = "molecules"
) -> MoleculeSet:
    """A validated MoleculeSet from a MoleculeSet or (Z [n], positions [n, 3]) pairs; ValueError naming
    `source` and the molecule when a record is empty, mis-shaped or not finite."""
    if not isinstance(molecules, MoleculeSet):
        pairs = [(np.asarray(z), np.asarray(pos, dtype=np.float64)) for z, pos in molecules]
        for index, (z, pos) in enumerate(pairs):
            if z.ndim != 1 or pos.shape != (len(z), 3):
                raise ValueError(
                    f"{source}: molecule {index} has atomic numbers of shape {z.shape} and positions of shape "
                    f"{pos.shape}; expected [n] and [n, 3]"
                )
            if len(z) and (z.min() < 1 or z.max() > MAX_ATOMIC_NUMBER):
                raise ValueError(f"{source}: molecule {index} has atomic numbers outside 1..{MAX_ATOMIC_NUMBER}")
        molecules = MoleculeSet(
            positions=np.concatenate([pos for _, pos in pairs]) if pairs else np.zeros((0, 3)),
            atomic_numbers=np.concatenate([z for z, _ in pairs]) if pairs else np.zeros(0),
            offsets=np.concatenate([[0], np.cumsum([len(z) for z, _ in pairs])]),
        )
    molecules.validate(source)
    empty = np.flatnonzero(molecules.num_atoms == 0)
    if empty.size:
        raise ValueError(f"{source}: molecule {int(empty[0])} has no atoms; remove it")
    return molecules

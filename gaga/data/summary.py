"""A printed summary of a data module: molecules per split, atom types, GAGA's moments, stage timings.

This is what `python -m gaga.data summary` prints and what train.py shows before fitting.
"""

from __future__ import annotations

from gaga.data.datamodule import MoleculeDataModule


def data_summary(datamodule: MoleculeDataModule) -> str:
    datamodule.setup()
    stats = datamodule.statistics
    lines = [f"dataset {datamodule.dataset_name}: atom types {' '.join(datamodule.encoder.symbols)}"]
    for name, split in datamodule.splits.items():
        sizes = split.num_atoms
        lines.append(
            f"  {name:<5} {len(split):>7,} molecules  {int(sizes.sum()):>9,} atoms  "
            f"atoms/molecule mean {sizes.mean():5.1f} max {sizes.max():3d}"
        )
    freqs = "  ".join(f"{s} {100 * f:.2f}%" for s, f in stats.atom_type_frequencies.items())
    lines.append(f"  atom types (train): {freqs}")
    m = stats.moments
    lines.append(
        f"  per-molecule RMS (train): coordinates {m['rms_coords']:.3f}  atom types {m['rms_types']:.3f}  "
        f"all columns {m['rms_all']:.3f}"
    )
    lines.append(
        f"  per-molecule unbiased variance: coordinates {m['var_coords']:.3f}  atom types {m['var_types']:.4f}"
    )
    lines.append("  time: " + "  ".join(f"{k} {v:.2f}s" for k, v in datamodule.timings.items()))
    return "\n".join(lines)

"""Evaluate molecules written by any program (SDF, multi-molecule XYZ, folder of XYZ) with gaga's metrics.

python -m gaga.evaluate PATH --data qm9|drugs [--out metrics.json] [--data-dir data] [--train-smiles FILE] [--plots]

Property-conditional generation (EDM's MAE table, a generator and a property predictor checkpoint) has its own
command: python -m gaga.evaluate_conditional.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gaga.atomic_files import write_text_atomically
from gaga.config import DATA_DIR
from gaga.console import interactive


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gaga.evaluate",
        description=__doc__.splitlines()[0],
        epilog="property-conditional generation (EDM's MAE table): python -m gaga.evaluate_conditional --help",
    )
    parser.add_argument("path", type=Path, help="an .sdf file, an .xyz file (one or many records) or a folder of .xyz")
    parser.add_argument("--data", choices=["qm9", "drugs"], required=True, help="which dataset's rules and references")
    parser.add_argument("--out", type=Path, default=Path("metrics.json"), help="where to write the metrics as JSON")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder of the dataset caches")
    parser.add_argument(
        "--train-smiles",
        type=Path,
        default=None,
        help="text file of training SMILES, one per line, for novelty (default: the dataset's "
        "training split, SMILES inferred from coordinates as EDM does, cached in --data-dir)",
    )
    parser.add_argument("--strain-molecules", type=int, default=1000, help="molecules sampled for MMFF strain (0: off)")
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write distributions.png beside --out: the generated bond lengths, bond angles, atom types, atom "
        "counts and fragments against the test split (the histograms behind the w1_* metrics)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def read_smiles_file(path: Path) -> set[str]:
    """SMILES of a text file, one per line (first whitespace-separated field; blank and # lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the SMILES file ({error})") from error
    return {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}


def main(argv: list[str] | None = None) -> int:
    from gaga.io import read_molecules
    from gaga.metrics import format_table
    from gaga.metrics.evaluation import evaluate
    from gaga.metrics.references import dataset_reference

    args = parse_args(argv)
    try:
        molecules = read_molecules(args.path)
        explicit_smiles = read_smiles_file(args.train_smiles) if args.train_smiles else None
        reference = dataset_reference(
            args.data,
            args.data_dir,
            progress=not args.quiet and interactive(),
            with_train_smiles=explicit_smiles is None,
        )
        train_smiles = explicit_smiles if explicit_smiles is not None else reference.train_smiles
        evaluation = evaluate(
            molecules,
            args.data,
            train_smiles,
            reference.geometry,
            progress=not args.quiet and interactive(),
            strain_molecules=args.strain_molecules,
            source=str(args.path),
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    notes = reference.notes + (
        [f"novelty against {len(explicit_smiles)} distinct SMILES from {args.train_smiles}"]
        if explicit_smiles is not None
        else []
    )
    metrics = evaluation.metrics
    print(f"{args.path}: {len(molecules)} molecules, {args.data} rules")
    print(format_table(metrics))
    for note in notes:
        print(f"note: {note}")
    report = {"input": str(args.path), "dataset": args.data, **metrics, "notes": notes}
    write_text_atomically(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.plots:
        from gaga.pictures.write import write_pictures

        plots = write_pictures(
            args.out.parent,
            molecules,
            args.data,
            count=0,
            geometry=evaluation.geometry,
            reference=reference.geometry,
            reference_name=f"{args.data} test split",
        )
        for path in plots.values():
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

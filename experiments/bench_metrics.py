"""Benchmark of gaga's evaluator on real QM9 molecules: time for 10,000 molecules and the figures it gives.

    python experiments/bench_metrics.py [--molecules 10000 | --test-split] [--data-dir data]

Prints the one-time cost (data, test-split reference, cached training SMILES), the evaluation time (target:
under a minute for 10,000 molecules on two cores) and the metrics next to EDM's on the same kind of input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import bench_edm
import numpy as np

from gaga.config import DATA_DIR
from gaga.data.qm9 import edm_split, load_qm9
from gaga.metrics import evaluate_molecules, format_table
from gaga.metrics.references import dataset_reference

REPO_ROOT = Path(__file__).resolve().parents[1]
# EDM's own code on 10,000 random QM9 molecules (percent), as recorded in docs/references.md; measured again by this
# script whenever EDM's code is in experiments/edm_reference/ (bench_edm.py)
EDM_ON_QM9 = {"atom_stability": 99.31, "mol_stability": 94.96, "validity": 97.57, "valid_x_unique": 97.56}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=10_000, help="random QM9 molecules to evaluate")
    parser.add_argument("--test-split", action="store_true", help="evaluate EDM's whole test split instead")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    qm9 = load_qm9(args.data_dir)
    reference = dataset_reference("qm9", args.data_dir)
    setup_seconds = time.perf_counter() - start
    if args.test_split:
        indices, label = edm_split(len(qm9))["test"], "EDM test split"
    else:
        indices = np.random.default_rng(args.seed).choice(len(qm9), args.molecules, replace=False)
        label = "random QM9 molecules"
    molecules = qm9.subset(indices)

    start = time.perf_counter()
    metrics = evaluate_molecules(molecules, "qm9", reference.train_smiles, reference.geometry, seed=args.seed)
    seconds = time.perf_counter() - start

    print(format_table(metrics))
    for note in reference.notes:
        print(f"note: {note}")
    print(f"\n{len(molecules)} {label}: evaluated in {seconds:.1f} s ({len(molecules) / seconds:.0f} molecules/s); "
          f"one-time setup (data, reference, training SMILES) {setup_seconds:.1f} s")  # fmt: skip
    if bench_edm.available():
        edm = {key: 100 * value for key, value in bench_edm.edm_metrics(molecules).items()}
        print(f"EDM's code on these {len(molecules)} molecules (run here) vs gaga, percent:")
    else:
        edm = EDM_ON_QM9
        print(f"{bench_edm.skipped_note()}; its recorded figures on 10,000 random molecules vs gaga, percent:")
    for key, theirs in edm.items():
        ours = 100 * metrics[key]
        print(f"  {key:<16} EDM {theirs:6.2f}   gaga {ours:6.2f}   diff {ours - theirs:+.2f}")


if __name__ == "__main__":
    main()

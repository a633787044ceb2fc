"""Dep's null distribution, T_ID / T* spread over seeds and T* over eps_ds x eps_dep on QM9 (issue 9, parts 3-4).

    python experiments/tstar_robustness.py [--parts null seeds eps] [--seeds 0 1 2 3 4] [--out experiments/results]

Data: EDM's QM9 training split (100,000 molecules), both blocks zero-meaned and noised with the model's projected
noise, EDM's schedule (polynomial_2, 1e-5, T = 1000). Parts:
- null: Dep of pure noise (alpha_bar = 0) on dataset mode's sample (5,000 molecules), 20 draws per block; and the
  per-molecule procedure's tests on pure noise (20,000 molecules, 3 seeds): the fraction of molecules failing each
  test (KS p <= 0.05, MI mean >= 0.1), which is that procedure's null.
- seeds: T_ID, T_DS, T* for seeds 0..4: dataset mode with the paper's literal rule (t_id_rule=first, no null), with
  the default rule (isotonic fit, null-raised threshold), and per_molecule mode (the reference procedure).
- eps: dataset-mode T* for eps_ds x eps_dep (seed 0, default rule). T_DS depends on eps_ds only and T_ID on eps_dep
  only (same seed: same molecules and noise), so one run per diagonal pair gives every cell:
  T* = max over blocks of max(T_DS(eps_ds), T_ID(eps_dep)).
Writes tstar_null.csv, tstar_seeds.csv and tstar_eps.csv under --out and prints every number.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_setup import qm9_training_blocks, write_rows

from gaga.config import DATA_DIR
from gaga.gaussianity import FEATURES, POSITIONS, GaussianitySettings, find_t_star
from gaga.gaussianity.blocks import SizeGroups
from gaga.gaussianity.dataset_mode import dependence_null
from gaga.gaussianity.reference_procedure import TESTS, run_test

REPO_ROOT = Path(__file__).resolve().parents[1]
BOTH = (POSITIONS, FEATURES)
K = {POSITIONS: 2, FEATURES: 3}
EPS_DS = (0.01, 0.015, 0.02, 0.03)
EPS_DEP = (0.005, 0.01, 0.02, 0.04)


def write(rows: list[dict], path: Path) -> None:
    write_rows(rows, path)
    print(f"wrote {path}")


def null_part(blocks, offsets, out: Path) -> None:
    rows = []
    ids = np.sort(np.random.default_rng(0).choice(np.flatnonzero(np.diff(offsets) >= 2), 5000, replace=False))
    null = dependence_null(blocks, offsets, ids, BOTH, 16, K, draws=20, seed=123)
    for block, values in null.items():
        v = np.array(values)
        print(
            f"dataset-mode Dep null, {block}, 5000 molecules, 20 draws: mean {v.mean():.4f} sd {v.std(ddof=1):.4f} "
            f"q95 {np.quantile(v, 0.95):.4f} max {v.max():.4f}; fraction > 0.01: {np.mean(v > 0.01):.2f}"
        )
        rows += [{"part": "dataset", "block": block, "draw": i, "value": x} for i, x in enumerate(values)]
    for seed in range(3):
        rng = np.random.default_rng([seed, 99])
        sample = np.sort(rng.choice(np.flatnonzero(np.diff(offsets) >= 4), 20000, replace=False))
        groups = SizeGroups.from_offsets(offsets, sample)
        fails = {f"{b}:{t}": 0 for b in BOTH for t in TESTS}
        for n in groups.molecules:
            for block in BOTH:
                eps = rng.standard_normal(groups.gather(blocks[block], n).shape)
                eps -= eps.mean(axis=1, keepdims=True)  # the model's (and the reference's) projected noise
                for test in TESTS:
                    passed = run_test(test, eps, 1.0, K[block], 0.05, 0.1, np.float32)
                    fails[f"{block}:{test}"] += int((~passed).sum())
        line = ", ".join(f"{name} {count / len(sample):.4f}" for name, count in fails.items())
        print(f"per-molecule null (pure noise, 20000 molecules, seed {seed}), fraction failing: {line}")
        rows += [
            {"part": "per_molecule", "block": name, "draw": seed, "value": count / len(sample)}
            for name, count in fails.items()
        ]
    write(rows, out / "tstar_null.csv")


def seeds_part(blocks, offsets, alpha_bar, seeds, out: Path) -> None:
    variants = {
        "dataset, paper's rule (first t, eps_dep 0.01)": {"mode": "dataset", "t_id_rule": "first", "dep_null_draws": 0},
        "dataset, default rule (isotonic fit, null)": {"mode": "dataset"},
        "per_molecule (reference procedure, mean)": {"mode": "per_molecule"},
    }
    rows = []
    for name, options in variants.items():
        for seed in seeds:
            start = time.perf_counter()
            settings = GaussianitySettings(zero_com_blocks=BOTH, seed=seed, **options)
            r = find_t_star(blocks, offsets, alpha_bar, settings, progress=False)
            row = {"variant": name, "seed": seed, "T*": r.t_star}
            for block in BOTH:
                row.update({f"T_ID {block}": r.t_id[block], f"T_DS {block}": r.t_ds[block]})
            if "eps_dep_used" in r.summary:
                row.update({f"eps_dep_used {b}": round(r.summary["eps_dep_used"][b], 5) for b in BOTH})
            rows.append(row)
            print(f"{name} seed {seed}: {row} ({time.perf_counter() - start:.1f} s)")
    for name in variants:
        chosen = [row for row in rows if row["variant"] == name]
        summary = {key: [row[key] for row in chosen] for key in chosen[0] if key.startswith(("T", "eps"))}
        print(f"{name}: " + "; ".join(f"{k} {v}" for k, v in summary.items()))
    write(rows, out / "tstar_seeds.csv")


def eps_part(blocks, offsets, alpha_bar, out: Path) -> None:
    t_ds, t_id = {}, {}
    for eps_ds, eps_dep in zip(EPS_DS, EPS_DEP, strict=True):
        settings = GaussianitySettings(zero_com_blocks=BOTH, eps_ds=eps_ds, eps_dep=eps_dep)
        r = find_t_star(blocks, offsets, alpha_bar, settings, progress=False)
        t_ds[eps_ds], t_id[eps_dep] = r.t_ds, r.t_id
        print(
            f"eps_ds {eps_ds}: T_DS {r.t_ds}; eps_dep {eps_dep}: T_ID {r.t_id} (eps used {r.summary['eps_dep_used']})"
        )
    rows = []
    print("T* (rows eps_ds, columns eps_dep " + ", ".join(map(str, EPS_DEP)) + ")")
    for eps_ds in EPS_DS:
        cells = [max(max(t_ds[eps_ds][b], t_id[eps_dep][b]) for b in BOTH) for eps_dep in EPS_DEP]
        rows += [{"eps_ds": eps_ds, "eps_dep": e, "T*": c} for e, c in zip(EPS_DEP, cells, strict=True)]
        print(f"  eps_ds {eps_ds}: " + "  ".join(map(str, cells)))
    write(rows, out / "tstar_eps.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["null", "seeds", "eps"], choices=["null", "seeds", "eps"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "results")
    args = parser.parse_args()
    blocks, offsets, alpha_bar, _ = qm9_training_blocks(args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if "null" in args.parts:
        null_part(blocks, offsets, args.out)
    if "seeds" in args.parts:
        seeds_part(blocks, offsets, alpha_bar, args.seeds, args.out)
    if "eps" in args.parts:
        eps_part(blocks, offsets, alpha_bar, args.out)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

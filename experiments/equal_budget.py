"""EDM with and without GAGA at an equal training budget, sampled with the ancestral sampler and DDIM (issue 10,
parts 1 and 2).

    python experiments/equal_budget.py [--preset quickstart] [--samples 200] [--arms edm control gaga_auto ...]
    python experiments/equal_budget.py --override trainer=gpu ... --jobs 6 --device cuda --samples 1000   # GPU

    python experiments/equal_budget.py --seed 43 --arms gaga_auto edm control --arms-only   # another seed

Every arm trains the same network with `train.py experiment=<preset> seed=<seed>` (same steps, seed and batch order;
the arm's overrides below are the only difference), then samples `--samples` molecules with sampling seed 0. Arms:
  edm        EDM's own preprocessing, T = 1000 (gaga=off);
  control    features zero-meaned as GAGA needs, still T = 1000 (gaga=off backbone.zero_mean_features=true);
  gaga_<T>   EDM + GAGA truncated at a fixed T* (gaga.t_star=T);
  gaga_auto  EDM + GAGA at the T* the evaluator finds on the training subset.
Sampled rows: each arm from its own start; the control model from gaga_auto's T* and closed-form Gaussian (isolates
the start Gaussian from truncated training); edm and gaga_auto with DDIM stride 2 (the paper's DDIM table); gaga_auto
from its T* with the start v_hat of each `gaga.variance` choice (exact is its own; paper and reference are measured on
QM9's full training split as in start_gaussian.py): which start Gaussian samples best (part 3).

Runs go to `--runs/seed<seed>/<arm>` (a finished arm is not retrained; a killed one resumes from its last.ckpt).
Writes, in `--out/seed<seed>`: samples.csv (one row per sampled model: rates with 95 % Wilson intervals, s/mol),
val_nll.csv (validation NLL against optimisation step per arm) and equal_budget.png (both, side by side); and in
`--out`: seeds.csv, each row's rates per seed and their mean over the seeds sampled so far.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_setup import write_rows
from compare_samples import RATES, wilson_interval

REPO_ROOT = Path(__file__).resolve().parents[1]
ARMS = {  # in training order: the central comparison first
    "gaga_auto": [],
    "edm": ["gaga=off"],
    "control": ["gaga=off", "backbone.zero_mean_features=true"],
    "gaga_550": ["gaga.t_star=550"],
    "gaga_450": ["gaga.t_star=450"],
    "gaga_650": ["gaga.t_star=650"],
}
COMMON = ["logger=csv", "~callbacks.sample_quality", "trainer.check_val_every_n_epoch=1"]
# every arm trains and samples on one CPU thread: the float summation order is the same for all arms whatever the
# machine's core count, and the timings do not suffer from other jobs sharing the cores
THREADS = 1
FINISHED = "finished.json"  # written into an arm's run folder once train.py returned successfully


def train_arm(name: str, args) -> Path:
    """Train arm `name` (or resume / reuse its run), logging to its run folder's train.log; its last checkpoint."""
    run_dir = args.runs / f"seed{args.seed}" / name
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if (run_dir / FINISHED).is_file():
        return checkpoint
    command = [
        sys.executable,
        "train.py",
        f"experiment={args.preset}",
        f"seed={args.seed}",
        *COMMON,
        *args.override,
        *ARMS[name],
    ]
    command += [f"hydra.run.dir={run_dir}", "ckpt_path=auto"]
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {' '.join(command[1:])}  (log: {run_dir / 'train.log'})", flush=True)
    with (run_dir / "train.log").open("a") as log:
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"[{name}] train.py failed (exit {done.returncode}); see {run_dir / 'train.log'}")
    (run_dir / FINISHED).write_text(json.dumps({"command": command[1:]}) + "\n")
    print(f"[{name}] trained", flush=True)
    return checkpoint


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(optimisation step, val/nll) pairs from the arm's CSV log."""
    points = []
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with path.open() as handle:
            points += [(int(r["step"]), float(r["val/nll"])) for r in csv.DictReader(handle) if r.get("val/nll")]
    return sorted(set(points))


def sample_row(label: str, checkpoint: Path, args, sampler: str = "ancestral", stride: int = 1, truncation=None):
    """Sample and score one model; `truncation` ({t_star, v_hat}) restarts it from another closed-form Gaussian.

    Each row is kept beside its checkpoint, so a rerun (after a kill, or with more rows) samples only what is new.
    """
    from gaga.metrics import evaluate_molecules
    from gaga.models.checkpoints import load_model
    from gaga.sampling import generate

    kept = checkpoint.parent.parent / f"row_{label.replace(' ', '_')}_{sampler}{stride}_{args.samples}.json"
    if kept.is_file():
        return json.loads(kept.read_text())

    model = load_model(checkpoint, args.device)
    trained_t_max = model.truncation.start_step
    if truncation is not None:
        model.set_truncation(truncation)
    generated = generate(model, args.samples, args.batch_size, sampler, stride, "auto", seed=0)
    metrics = evaluate_molecules(generated.molecules, "qm9", strain_molecules=0, progress=False)
    gaga = model.truncation.record() or {}
    row = {
        "model": label,
        "sampler": f"{sampler}" + (f" stride {stride}" if stride > 1 else ""),
        "start": generated.start,
        "trained_t_max": trained_t_max,
        "network_evaluations": generated.num_evaluations,
        "s_per_mol": round(generated.seconds_per_molecule, 4),
        "atom_stability": round(100 * metrics["atom_stability"], 1),
        "fragments_per_mol": round(metrics["num_fragments"], 2),
        "start_v_hat": " / ".join(f"{v:.4g}" for v in gaga["v_hat"].values()) if gaga else "1 (EDM prior)",
    }
    n = int(metrics["num_molecules"])
    for key in RATES:
        low, high = wilson_interval(metrics[key], n)
        row[key] = f"{100 * metrics[key]:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    print(json.dumps(row), flush=True)
    kept.write_text(json.dumps(row) + "\n")
    return row


def start_gaussian_rows(checkpoint: Path, args) -> list[dict]:
    """The GAGA model sampled from its T* with the paper's and the reference code's start v_hat."""
    from bench_setup import qm9_training_blocks

    from gaga.gaussianity import FEATURES, POSITIONS
    from gaga.gaussianity.choice import choose_variance
    from gaga.models.checkpoints import read_checkpoint, truncation_record

    t_star = truncation_record(read_checkpoint(checkpoint))["t_star"]
    blocks, offsets, _, _ = qm9_training_blocks(REPO_ROOT / "data")
    rows = []
    for choice in ("paper", "reference"):
        start = choose_variance(blocks, offsets, choice, (POSITIONS, FEATURES))[1]
        truncation = {"t_star": t_star, "v_hat": {"pos": float(start[POSITIONS]), "h": float(start[FEATURES])}}
        rows.append(sample_row(f"gaga_auto, {choice} start v_hat", checkpoint, args, truncation=truncation))
    return rows


def plot(rows: list[dict], curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in curves.items():
        left.plot(*zip(*points, strict=True), marker="o", label=name)
    left.set(xlabel="optimisation step", ylabel="validation NLL (nats / molecule)", title="validation NLL")
    left.legend(fontsize=8)
    labels = [f"{r['model']}\n{r['sampler']}" for r in rows]
    rates = [float(r["valid_x_unique"].split()[0]) for r in rows]
    bounds = [[float(v) for v in r["valid_x_unique"].split("[")[1].rstrip("]").split(",")] for r in rows]
    errors = [[rate - low for rate, (low, _) in zip(rates, bounds, strict=True)]]
    errors.append([high - rate for rate, (_, high) in zip(rates, bounds, strict=True)])
    right.bar(range(len(rows)), rates, yerr=errors, capsize=3, color="tab:blue")
    right.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    right.set(ylabel="valid x unique (%), 95 % Wilson", title="samples")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quickstart", help="the experiment= preset every arm trains with")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every arm (trainer=gpu ...)")
    parser.add_argument("--jobs", type=int, default=1, help="arms trained at the same time (GPU: several)")
    parser.add_argument("--device", default="cpu", help="where sampling runs (cpu, cuda)")
    parser.add_argument("--seed", type=int, default=42, help="training seed (and training subset) of every arm")
    parser.add_argument("--arms-only", action="store_true", help="sample each arm from its own start only")
    parser.add_argument("--samples", type=int, default=200, help="molecules sampled per row")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "outputs" / "equal_budget")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "results" / "equal_budget")
    args = parser.parse_args()
    if args.samples < 1 or args.jobs < 1:
        parser.error("--samples and --jobs must be >= 1")
    import torch

    torch.set_num_threads(THREADS)
    with ThreadPoolExecutor(args.jobs) as pool:  # on a GPU, small arms train side by side
        checkpoints = dict(zip(args.arms, pool.map(lambda name: train_arm(name, args), args.arms), strict=True))
    curves = {name: validation_curve(args.runs / f"seed{args.seed}" / name) for name in args.arms}

    rows = [sample_row(name, checkpoint, args) for name, checkpoint in checkpoints.items()]
    if not args.arms_only:
        rows += extra_rows(checkpoints, args)

    out = args.out / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out / "samples.csv")
    write_rows([{"arm": a, "step": s, "val_nll": v} for a, pts in curves.items() for s, v in pts], out / "val_nll.csv")
    plot(rows, curves, out / "equal_budget.png")
    write_rows(seed_summary(args.out), args.out / "seeds.csv")
    print(f"wrote {out}/samples.csv, val_nll.csv, equal_budget.png and {args.out}/seeds.csv")


def extra_rows(checkpoints: dict[str, Path], args) -> list[dict]:
    """The control from GAGA's start, DDIM stride 2, and the GAGA model from each variance choice's start."""
    rows = []
    if "control" in checkpoints and "gaga_auto" in checkpoints:
        from gaga.models.checkpoints import read_checkpoint, truncation_record

        found = truncation_record(read_checkpoint(checkpoints["gaga_auto"]))
        rows.append(sample_row(f"control from T*={found['t_star']}", checkpoints["control"], args, truncation=found))
    for name in ("edm", "gaga_auto"):
        if name in checkpoints:
            rows.append(sample_row(name, checkpoints[name], args, sampler="ddim", stride=2))
    if "gaga_auto" in checkpoints:
        rows += start_gaussian_rows(checkpoints["gaga_auto"], args)
    return rows


def seed_summary(out: Path) -> list[dict]:
    """Per (model, sampler) row: validity and valid x unique of every seed sampled so far, and their mean."""
    per_row: dict[tuple[str, str], dict[str, dict]] = {}
    for path in sorted(out.glob("seed*/samples.csv")):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                per_row.setdefault((row["model"], row["sampler"]), {})[path.parent.name] = row
    summary = []
    for (model, sampler), seeds in per_row.items():
        entry = {"model": model, "sampler": sampler, "seeds": " ".join(seeds)}
        for key in ("validity", "valid_x_unique"):
            rates = [float(row[key].split()[0]) for row in seeds.values()]
            entry[key] = " / ".join(f"{rate:.1f}" for rate in rates)
            entry[f"{key}_mean"] = round(sum(rates) / len(rates), 1)
        summary.append(entry)
    return summary


if __name__ == "__main__":
    main()

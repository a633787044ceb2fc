"""Learning curves of EDM and EDM + GAGA (centred and kept features) to a budget with real molecules (issue 18, part 2).

    python experiments/learning_curves.py                    # train every arm to the next milestone, sample, repeat
    python experiments/learning_curves.py --steps 30000 --every 5000 --samples 300
    python experiments/learning_curves.py --save-state       # copy each arm's newest checkpoint into the results
    python experiments/learning_curves.py --report           # tables, plots and the page's table from the rows so far
    python experiments/learning_curves.py --step-times 60    # seconds per step of each arm (run on a quiet machine)

Arms share the network, data (QM9's full 100,000-molecule training split), batch order, noise streams and seed; their
overrides below are the only difference:
  edm            gaga=off: EDM on the full trajectory;
  gaga_centred   GAGA as the paper and its reference code (atom features zero-meaned per molecule);
  gaga_kept      GAGA with EDM's atom features kept (gaga.features=kept: the closed form carries their mean);
  edm_kept_start a sampling-only arm: EDM's model sampled from gaga_kept's T* and start Gaussian.
Each arm trains to the next milestone (a multiple of --every steps) in its own train.py process on one thread, and
its EMA weights then sample --samples molecules (seed 0) that the project's evaluator scores; --workers arms (default
2, one per core) do so at once, in milestone order. A killed run resumes exactly where its last checkpoint (written
every 500 steps) left it, on this machine from `--runs`, on a fresh one from the copies `--save-state` keeps under
`--out/state` (committed).

Writes under --out: rows.csv (one row per arm and milestone: rates with 95 % Wilson intervals, atom stability and
fragments per molecule with 95 % bootstrap intervals over molecules, network evaluations), val_nll.csv, and
learning_curves.png (quality and validation NLL against training step; with step_times.csv, also against hours;
dashed: the threshold for molecules). --report also prints the verdict: each GAGA variant against EDM (beats, ties
or loses per figure, by whether the 95 % intervals are apart) from the first milestone with molecules (>= 80 % atom
stability, <= 2 fragments per molecule), and the `gaga.features` default by the issue's rule.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from bench_setup import write_rows
from compare_samples import wilson_interval

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_ARMS = {"edm": ["gaga=off"], "gaga_centred": [], "gaga_kept": ["gaga.features=kept"]}
SAMPLING_ARMS = {"edm_kept_start": ("edm", "gaga_kept")}  # (model, truncation taken from)
NETWORK = ["backbone.net.hidden_nf=64", "backbone.net.n_layers=3"]
COMMON = [
    "experiment=quickstart",
    *NETWORK,
    "data.subset.train=null",
    "data.subset.valid=512",
    "data.batch_size=64",
    "backbone.ema_decay=0.999",
    "trainer.max_epochs=-1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=100",
    "logger=csv",
    "~callbacks.sample_quality",
    "callbacks.model_checkpoint.monitor=null",
    "callbacks.model_checkpoint.save_top_k=0",
    "+callbacks.model_checkpoint.every_n_train_steps=500",
]
THREADS = 1
COLOURS = {"edm": "tab:blue", "gaga_centred": "tab:green", "gaga_kept": "tab:red", "edm_kept_start": "tab:orange"}
RATES = ("mol_stability", "validity", "valid_x_unique")
BOOTSTRAP = 2000
MOLECULES = {"atom_stability": 80.0, "fragments_per_mol": 2.0}  # issue 18: molecules exist at >= 80 % and <= 2
HIGHER_IS_BETTER = {"atom_stability": True, "fragments_per_mol": False, "mol_stability": True, "validity": True}
GAGA_ARMS = tuple(arm for arm in TRAINING_ARMS if arm != "edm")


def arm_dir(args, arm: str) -> Path:
    return args.runs / f"seed{args.seed}" / arm


def last_checkpoint(args, arm: str) -> Path:
    return arm_dir(args, arm) / "checkpoints" / "last.ckpt"


def snapshot(args, arm: str, milestone: int) -> Path:
    return arm_dir(args, arm) / "milestones" / f"step_{milestone:06d}.ckpt"


def trained_steps(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"]) if path.is_file() else 0


def restore_state(args, arm: str) -> None:
    """On a fresh machine: the arm's newest checkpoint from the committed state, where the runs folder has none."""
    kept = args.out / "state" / arm / "last.ckpt"
    target = last_checkpoint(args, arm)
    if kept.is_file() and trained_steps(kept) > trained_steps(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", ".sha256"):
            shutil.copyfile(f"{kept}{suffix}", f"{target}{suffix}")
        print(f"[{arm}] restored step {trained_steps(kept)} from {kept}", flush=True)


def save_state(args) -> None:
    for arm in TRAINING_ARMS:
        source = last_checkpoint(args, arm)
        if source.is_file():
            target = args.out / "state" / arm / "last.ckpt"
            target.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", ".sha256"):
                shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
            print(f"[{arm}] step {trained_steps(source)} kept in {target}", flush=True)


def train_to(args, arm: str, milestone: int) -> Path:
    """Train (or resume) the arm until `milestone` optimisation steps; its checkpoint at that step."""
    kept = snapshot(args, arm, milestone)
    if kept.is_file():
        return kept
    restore_state(args, arm)
    command = [sys.executable, "train.py", *COMMON, f"seed={args.seed}", *args.override, *TRAINING_ARMS[arm]]
    command += [f"trainer.max_steps={milestone}", f"hydra.run.dir={arm_dir(args, arm)}", "ckpt_path=auto"]
    arm_dir(args, arm).mkdir(parents=True, exist_ok=True)
    print(f"[{arm}] training to step {milestone}  (log: {arm_dir(args, arm) / 'train.log'})", flush=True)
    with (arm_dir(args, arm) / "train.log").open("a") as log:
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    last = last_checkpoint(args, arm)
    if done.returncode != 0 or trained_steps(last) != milestone:
        raise SystemExit(f"[{arm}] train.py stopped before step {milestone}; see {arm_dir(args, arm) / 'train.log'}")
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(last, kept)
    return kept


def interval(values: np.ndarray, statistic, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile bootstrap interval of `statistic` over molecules (resampled with replacement)."""
    picks = rng.integers(0, len(values), (BOOTSTRAP, len(values)))
    estimates = np.array([statistic(values[p]) for p in picks])
    return float(np.percentile(estimates, 2.5)), float(np.percentile(estimates, 97.5))


def per_molecule_quality(molecules) -> tuple[np.ndarray, np.ndarray]:
    """(stable atoms and atoms per molecule [M, 2], fragments per molecule [M]) with the evaluator's own rules."""
    from gaga.metrics.bonds import atom_valences, bond_rules, encode_types, infer_bonds, stable_atoms
    from gaga.metrics.geometry import fragments_per_molecule

    rules = bond_rules("qm9")
    types = encode_types(molecules, rules, "samples")
    bonds = infer_bonds(types, molecules.positions, molecules.offsets, rules)
    stable = stable_atoms(types, atom_valences(bonds, len(types)), rules)
    counts = np.diff(molecules.offsets)
    stable_counts = np.add.reduceat(stable.astype(np.int64), molecules.offsets[:-1])
    return np.stack([stable_counts, counts], axis=1), fragments_per_molecule(molecules.offsets, bonds)


def sample_row(args, arm: str, milestone: int, checkpoint: Path, truncation: dict | None = None) -> dict:
    """Sample and score one arm at one milestone (kept as JSON beside the results, so it is never redone)."""
    kept = args.out / "rows" / f"{arm}_step{milestone:06d}_{args.samples}.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    from gaga.metrics import evaluate_molecules
    from gaga.models.checkpoints import load_model
    from gaga.sampling import generate

    model = load_model(checkpoint, "cpu")
    if truncation is not None:
        model.set_truncation(truncation)
    generated = generate(model, args.samples, args.batch_size, "ancestral", 1, "auto", seed=0, progress=False)
    metrics = evaluate_molecules(generated.molecules, "qm9", strain_molecules=0, progress=False)
    atoms, fragments = per_molecule_quality(generated.molecules)
    rng = np.random.default_rng(0)
    row = {"arm": arm, "step": milestone, "molecules": len(generated.molecules), "start": generated.start}
    row["network_evaluations"] = generated.num_evaluations
    row["atom_stability"] = 100 * metrics["atom_stability"]
    low, high = interval(atoms, lambda a: a[:, 0].sum() / a[:, 1].sum(), rng)
    row["atom_stability_low"], row["atom_stability_high"] = 100 * low, 100 * high
    row["fragments_per_mol"] = metrics["num_fragments"]
    row["fragments_per_mol_low"], row["fragments_per_mol_high"] = interval(fragments, np.mean, rng)
    for key in RATES:
        low, high = wilson_interval(metrics[key], len(generated.molecules))
        row[key], row[f"{key}_low"], row[f"{key}_high"] = 100 * metrics[key], 100 * low, 100 * high
    row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def truncation_of(checkpoint: Path) -> dict:
    from gaga.models.checkpoints import read_checkpoint, truncation_record

    return truncation_record(read_checkpoint(checkpoint))


def validation_curves(args) -> list[dict]:
    """Validation NLL by arm and step: the points kept in --out/val_nll.csv (earlier machines' runs) and those in
    this machine's run logs."""
    points = set()
    kept = args.out / "val_nll.csv"
    if kept.is_file():
        with kept.open() as handle:
            points.update((r["arm"], int(r["step"]), float(r["val_nll"])) for r in csv.DictReader(handle))
    for arm in TRAINING_ARMS:
        for path in sorted((arm_dir(args, arm) / "csv").glob("version_*/metrics.csv")):
            with path.open() as handle:
                for r in csv.DictReader(handle):
                    if r.get("val/nll"):
                        points.add((arm, int(r["step"]), round(float(r["val/nll"]), 3)))
    return [{"arm": a, "step": s, "val_nll": v} for a, s, v in sorted(points)]


def campaign(args) -> None:
    """Every (arm, milestone) job in milestone order, `--workers` at a time: a training arm's job waits for its
    previous milestone, the sampling-only arm's for both arms it reads. Each job runs in its own process on one
    thread, so the arms advance side by side, one per core."""
    jobs = [(arm, m) for m in range(args.every, args.steps + 1, args.every) for arm in [*TRAINING_ARMS, *SAMPLING_ARMS]]
    done: set[tuple[str, int]] = set()
    running: dict = {}
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while jobs or running:
            busy = {arm for arm, _ in running.values()}
            for job in [j for j in jobs if j[0] not in busy and prerequisites(args, *j) <= done]:
                if len(running) < args.workers:
                    jobs.remove(job)
                    running[pool.submit(run_job, args, *job)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                future.result()  # a failed job stops the campaign with its own message
                done.add(job)
            report(args)


def prerequisites(args, arm: str, milestone: int) -> set[tuple[str, int]]:
    if arm in SAMPLING_ARMS:
        return {(source, milestone) for source in SAMPLING_ARMS[arm]}
    return {(arm, milestone - args.every)} if milestone > args.every else set()


def run_job(args, arm: str, milestone: int) -> None:
    """One arm at one milestone: train (or resume) to it and sample, or for a sampling-only arm, sample the model arm's
    snapshot from the source arm's truncation."""
    import torch

    torch.set_num_threads(THREADS)
    if arm in SAMPLING_ARMS:
        model, source = SAMPLING_ARMS[arm]
        truncation = truncation_of(snapshot(args, source, milestone))
        sample_row(args, arm, milestone, snapshot(args, model, milestone), truncation)
    else:
        sample_row(args, arm, milestone, train_to(args, arm, milestone))


def read_rows(args) -> list[dict]:
    rows = [json.loads(path.read_text()) for path in sorted((args.out / "rows").glob("*.json"))]
    return sorted((r for r in rows if r["molecules"] == args.samples), key=lambda r: (r["arm"], r["step"]))


def report(args) -> None:
    rows = read_rows(args)
    if not rows:
        raise SystemExit(f"no rows under {args.out / 'rows'} yet: run the campaign first")
    write_rows(rows, args.out / "rows.csv")
    curves = validation_curves(args)
    if curves:
        write_rows(curves, args.out / "val_nll.csv")
    else:  # on a machine without the runs, keep the committed curve
        curves = list(csv.DictReader((args.out / "val_nll.csv").open())) if (args.out / "val_nll.csv").is_file() else []
    plot(rows, curves, step_times(args), args.out / "learning_curves.png")
    print(f"wrote {args.out / 'rows.csv'}, {args.out / 'val_nll.csv'}, {args.out / 'learning_curves.png'}")
    print(markdown_table(rows))
    print(verdict(rows))


def markdown_table(rows: list[dict]) -> str:
    """The rows as the results page's table, by milestone then arm, each figure with its 95 % interval."""
    columns = [("atom_stability", "atom stability %", 1), ("fragments_per_mol", "fragments / molecule", 2)]
    columns += [("mol_stability", "molecule stability %", 1), ("validity", "validity %", 1)]
    columns += [("valid_x_unique", "valid x unique %", 1)]
    lines = ["| arm | step | start | NFE | " + " | ".join(label for _, label, _ in columns) + " |"]
    lines.append("|---" * (4 + len(columns)) + "|")
    for r in sorted(rows, key=lambda r: (r["step"], list(COLOURS).index(r["arm"]))):
        cells = [f"{r[k]:.{d}f} [{r[k + '_low']:.{d}f}, {r[k + '_high']:.{d}f}]" for k, _, d in columns]
        lines.append(
            f"| {r['arm']} | {r['step']:,} | {r['start']} | {r['network_evaluations']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def has_molecules(row: dict) -> bool:
    """The issue's threshold: at least 80 % atom stability and at most 2 fragments per molecule."""
    return (
        row["atom_stability"] >= MOLECULES["atom_stability"]
        and row["fragments_per_mol"] <= MOLECULES["fragments_per_mol"]
    )


def compare(mine: dict, theirs: dict, key: str) -> str:
    """'beats', 'loses' or 'ties': `mine` against `theirs` on one figure, 'ties' when their 95 % intervals overlap."""
    if mine[f"{key}_low"] > theirs[f"{key}_high"]:
        return "beats" if HIGHER_IS_BETTER[key] else "loses"
    if mine[f"{key}_high"] < theirs[f"{key}_low"]:
        return "loses" if HIGHER_IS_BETTER[key] else "beats"
    return "ties"


def default_features(rows: list[dict]) -> tuple[str, int | None, dict[str, str]]:
    """(the `gaga.features` default by the issue's rule, the step it was decided at, kept against centred per figure):
    `kept` only if, at the largest step both variants reached, it beats `centred` on some figure with intervals apart
    and loses on none."""
    row_at = {(r["arm"], r["step"]): r for r in rows}
    steps = [step for arm, step in row_at if arm == "gaga_kept" and ("gaga_centred", step) in row_at]
    if not steps:
        return "centred", None, {}
    largest = max(steps)
    kept, centred = row_at["gaga_kept", largest], row_at["gaga_centred", largest]
    outcomes = {key: compare(kept, centred, key) for key in HIGHER_IS_BETTER}
    wins = set(outcomes.values())
    return ("kept" if "beats" in wins and "loses" not in wins else "centred"), largest, outcomes


def verdict(rows: list[dict]) -> str:
    """Each GAGA variant against EDM at every milestone from the first where some arm has molecules (beats / ties /
    loses per figure, by whether the 95 % intervals are apart), and the default `gaga.features` by the issue's rule."""
    first = min((r["step"] for r in rows if has_molecules(r)), default=None)
    if first is None:
        return "No arm has molecules yet (>= 80 % atom stability and <= 2 fragments per molecule)."
    by_key = {(r["arm"], r["step"]): r for r in rows}
    reached = ", ".join(sorted(r["arm"] for r in rows if r["step"] == first and has_molecules(r)))
    lines = [f"Molecules from step {first:,} (first: {reached}).", ""]
    lines += ["| step | variant | molecules | " + " | ".join(f"{key} vs edm" for key in HIGHER_IS_BETTER) + " |"]
    lines.append("|---" * (3 + len(HIGHER_IS_BETTER)) + "|")
    for step in sorted({r["step"] for r in rows if r["step"] >= first}):
        for arm in GAGA_ARMS:
            if (arm, step) in by_key and ("edm", step) in by_key:
                mine, edm = by_key[arm, step], by_key["edm", step]
                cells = [compare(mine, edm, key) for key in HIGHER_IS_BETTER]
                lines.append(
                    f"| {step:,} | {arm} | {'yes' if has_molecules(mine) else 'no'} | " + " | ".join(cells) + " |"
                )
    features, step, outcomes = default_features(rows)
    against = ", ".join(f"{key} {outcome}" for key, outcome in outcomes.items())
    decided = f"kept against centred at step {step:,}: {against}" if step else "no step with both variants"
    lines += ["", f"Default gaga.features={features}; {decided}."]
    return "\n".join(lines)


def step_times(args) -> dict[str, float]:
    path = args.out / "step_times.csv"
    if not path.is_file():
        return {}
    return {r["arm"]: float(r["seconds_per_step"]) for r in csv.DictReader(path.open())}


def measure_step_times(args) -> None:
    """Seconds per training step of each arm, from a fresh short run of `--step-times` steps on one thread (the
    first 10 steps are left out); run it on an otherwise idle machine."""
    rows = []
    for arm in TRAINING_ARMS:
        folder = args.runs / "step_times" / arm
        shutil.rmtree(folder, ignore_errors=True)
        command = [sys.executable, "train.py", *COMMON, f"seed={args.seed}", *args.override, *TRAINING_ARMS[arm]]
        command += [f"trainer.max_steps={args.step_times}", "trainer.log_every_n_steps=10", f"hydra.run.dir={folder}"]
        command += ["trainer.limit_val_batches=0"]
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True)
        rates = []
        for path in (folder / "csv").glob("version_*/metrics.csv"):
            rates += [float(r["train/steps_per_s"]) for r in csv.DictReader(path.open()) if r.get("train/steps_per_s")]
        seconds = 1.0 / float(np.mean(rates[1:]))
        rows.append({"arm": arm, "seconds_per_step": round(seconds, 4), "steps": args.step_times})
        print(rows[-1], flush=True)
    rows.append({"arm": "edm_kept_start", "seconds_per_step": rows[0]["seconds_per_step"], "steps": "(edm's)"})
    write_rows(rows, args.out / "step_times.csv")


def plot(rows: list[dict], curves: list[dict], seconds: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("atom_stability", "atom stability (%)"), ("mol_stability", "molecule stability (%)")]
    panels += [("validity", "validity (%)"), ("valid_x_unique", "valid x unique (%)")]
    panels += [("fragments_per_mol", "fragments per molecule")]
    columns = len(panels) + 1
    figure, axes = plt.subplots(2 if seconds else 1, columns, figsize=(3.3 * columns, 6.4 if seconds else 3.4))
    axes = np.atleast_2d(axes)
    arms = sorted({r["arm"] for r in rows})
    abscissae = [lambda r: r["step"]] + ([lambda r: r["step"] * seconds[r["arm"]] / 3600] if seconds else [])
    for line, x_of in enumerate(abscissae):
        for axis, (key, label) in zip(axes[line], panels, strict=False):
            for arm in arms:
                mine = [r for r in rows if r["arm"] == arm]
                x = [x_of(r) for r in mine]
                y = np.array([r[key] for r in mine])
                low = np.array([r[f"{key}_low"] for r in mine])
                high = np.array([r[f"{key}_high"] for r in mine])
                axis.errorbar(x, y, yerr=[y - low, high - y], marker="o", capsize=3, label=arm, color=COLOURS[arm])
            if key in MOLECULES:  # the threshold for molecules
                axis.axhline(MOLECULES[key], color="grey", linestyle="--", linewidth=0.8)
            axis.set(xlabel="training step" if line == 0 else "training hours (1 thread)", ylabel=label)
        axes[line][0].legend(fontsize=7)
    nll = axes[0][-1]
    for arm in TRAINING_ARMS:
        mine = [c for c in curves if c["arm"] == arm]
        nll.plot([int(c["step"]) for c in mine], [float(c["val_nll"]) for c in mine], label=arm, color=COLOURS[arm])
    nll.set(xlabel="training step", ylabel="validation NLL bound (nats)", title="GAGA: bound at own T*")
    nll.set_yscale("symlog", linthresh=10)  # EDM's NLL turns negative (a density of continuous coordinates)
    nll.legend(fontsize=7)
    if seconds:
        axes[1][-1].axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30000, help="training steps per arm")
    parser.add_argument("--every", type=int, default=5000, help="steps between sampled checkpoints")
    parser.add_argument("--samples", type=int, default=300, help="molecules sampled per arm and checkpoint")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2, help="arms trained at once, one thread each (one per core)")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every arm (smoke tests)")
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "outputs" / "learning_curves")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "results" / "learning_curves")
    parser.add_argument("--save-state", action="store_true", help="copy each arm's newest checkpoint to --out/state")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables and plot from kept rows")
    parser.add_argument("--step-times", type=int, default=0, help="measure seconds per step over this many steps")
    args = parser.parse_args()
    if min(args.steps, args.every, args.samples, args.workers) < 1 or args.steps % args.every:
        parser.error("--steps, --every, --samples and --workers must be >= 1, and --every must divide --steps")
    started = time.perf_counter()
    if args.save_state:
        save_state(args)
    elif args.report:
        report(args)
    elif args.step_times:
        measure_step_times(args)
    else:
        campaign(args)
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

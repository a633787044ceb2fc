"""Property-conditional generation scored as EDM scores it (Hoogeboom et al. 2022, Table 3), in the property's unit.

python -m gaga.evaluate_conditional --generator GEN.ckpt --predictor PRED.ckpt [--samples 1000] [--seed 0]
    [--out FILE.json] [--reference-molecules N] [--batch-size 100] [--device auto] [--data-dir DIR]

The predictor (`experiment=property_predictor_qm9`, trained on EDM's first half of QM9's training split) predicts its
property of each molecule. Four mean absolute errors, each with a 95 % bootstrap interval:

- EDM-style generator: the predictor on the generator's molecules against the values they were asked for (drawn from
  p(property | N) of the generator's training molecules, EDM's DistributionProperty);
- Naive (upper bound): the predictor on the second half's molecules against their values shuffled (seeded);
- #Atoms: a regressor that sees only the atom count, the median of the first half's values per count (the L1-optimal
  constant; the first half's overall median for a count it never saw), on the second half. EDM trains a small
  network on the atom count for this row (its `NumNodes`); the per-count median is what that network can at best
  learn under an L1 loss, with nothing to train;
- QM9 (lower bound): the predictor on the second half's molecules against their own values.

Without --generator only the three baselines are computed. The papers' figures stand beside ours in their own
columns (`PUBLISHED_MAE`; also docs/references.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaga.atomic_files import write_text_atomically
from gaga.config import DATA_DIR
from gaga.console import interactive
from gaga.data.molecules import MoleculeSet

# The papers' MAEs, property -> figure, in EDM's units (alpha Bohr^3, gap / homo / lumo meV, mu D, Cv cal/(mol K)):
# EDM, Hoogeboom et al. 2022, "Equivariant Diffusion for Molecule Generation in 3D", Table 3 (conditional
# generation on QM9); GeoLDM, Xu et al. 2023, "Geometric Latent Diffusion Models for 3D Molecule Generation", its
# conditional-generation table (generator row only).
PUBLISHED_SOURCES = {
    "EDM": "Hoogeboom et al. 2022 (EDM), Table 3",
    "GeoLDM": "Xu et al. 2023 (GeoLDM), conditional generation table",
}
_PROPERTIES = ("alpha", "gap", "homo", "lumo", "mu", "Cv")
PUBLISHED_MAE: dict[str, dict[str, dict[str, float]]] = {
    row: {paper: dict(zip(_PROPERTIES, figures, strict=True)) for paper, figures in papers.items()}
    for row, papers in {
        "generator": {"EDM": (2.76, 655, 356, 584, 1.111, 1.101), "GeoLDM": (2.37, 587, 340, 522, 1.108, 1.025)},
        "naive": {"EDM": (9.01, 1470, 645, 1457, 1.616, 6.857)},
        "atoms": {"EDM": (3.86, 866, 426, 813, 1.053, 1.971)},
        "lower_bound": {"EDM": (0.10, 64, 39, 36, 0.043, 0.040)},
    }.items()
}
ROW_LABELS = {
    "generator": "EDM-style generator",
    "naive": "Naive (upper bound)",
    "atoms": "#Atoms",
    "lower_bound": "QM9 (lower bound)",
}
BOOTSTRAP_DRAWS = 1000

Predictor = Callable[[MoleculeSet], np.ndarray]  # molecules -> the predicted property of each [M]


@dataclass(frozen=True)
class Estimate:
    """A mean absolute error over `count` molecules and its 95 % bootstrap interval (percentiles 2.5 and 97.5)."""

    mae: float
    low: float
    high: float
    count: int

    def record(self) -> dict:
        return {"mae": self.mae, "ci95": [self.low, self.high], "molecules": self.count}


def mean_absolute_error(errors: np.ndarray, seed: int, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """The mean of `errors` (absolute errors, one per molecule) with a percentile bootstrap over the molecules."""
    errors = np.abs(np.asarray(errors, dtype=np.float64))
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            errors[rng.integers(0, len(errors), (min(100, draws - start), len(errors)))].mean(axis=1)
            for start in range(0, draws, 100)
        ]
    )
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(errors.mean()), float(low), float(high), len(errors))


class MedianPerSize:
    """The #Atoms regressor: per atom count, the median of the fitted molecules' values (the constant that minimises
    the mean absolute error); the median of all fitted values for a count not seen."""

    def __init__(self, num_atoms: np.ndarray, values: np.ndarray):
        num_atoms, values = np.asarray(num_atoms), np.asarray(values, dtype=np.float64)
        self.medians = {int(n): float(np.median(values[num_atoms == n])) for n in np.unique(num_atoms)}
        self.fallback = float(np.median(values))

    def __call__(self, num_atoms: np.ndarray) -> np.ndarray:
        return np.array([self.medians.get(int(n), self.fallback) for n in num_atoms], dtype=np.float64)


def shuffled(values: np.ndarray, seed: int) -> np.ndarray:
    """`values` in the order of `np.random.default_rng(seed).permutation`: the naive baseline's labels."""
    return np.asarray(values)[np.random.default_rng(seed).permutation(len(values))]


def baselines(
    predict: Predictor,
    name: str,
    first_half: MoleculeSet,
    second_half: MoleculeSet,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
) -> dict[str, Estimate]:
    """EDM's three reference rows for property `name` (row -> Estimate): the predictor on the second half's molecules
    against their shuffled values ("naive") and their own ("lower_bound"), and the per-count median of the first
    half on the second ("atoms"); `draws` bootstrap draws for each interval."""
    values = second_half.properties[name]
    predicted = np.asarray(predict(second_half), dtype=np.float64)
    by_size = MedianPerSize(first_half.num_atoms, first_half.properties[name])
    return {
        "naive": mean_absolute_error(predicted - shuffled(values, seed), seed, draws),
        "atoms": mean_absolute_error(by_size(second_half.num_atoms) - values, seed, draws),
        "lower_bound": mean_absolute_error(predicted - values, seed, draws),
    }


def generator_estimate(predict: Predictor, name: str, generated: MoleculeSet, seed: int) -> Estimate:
    """The predictor on generated molecules against the values of `name` they were asked for
    (`generated.properties[name]`, which conditional sampling records)."""
    if name not in generated.properties:
        raise ValueError(
            f"the generated molecules carry no requested {name} values; sample them from a model conditioned on {name}"
        )
    predicted = np.asarray(predict(generated), dtype=np.float64)
    return mean_absolute_error(predicted - generated.properties[name], seed)


def format_table(rows: dict[str, Estimate], name: str, unit: str) -> str:
    """EDM's table for one property: our MAE and interval per row, the papers' figures in their own columns."""
    papers = list(PUBLISHED_SOURCES)
    header = f"{'':<22} {'MAE (' + unit + ')':>14} {'95 % interval':>22}" + "".join(
        f" {paper + ' (paper)':>15}" for paper in papers
    )
    lines = [f"property {name} ({unit}), every MAE in {unit}", header]
    for row, label in ROW_LABELS.items():
        estimate = rows.get(row)
        ours = (
            f"{estimate.mae:>14.4g} {f'[{estimate.low:.4g}, {estimate.high:.4g}]':>22}"
            if estimate
            else f"{'not run':>14} {'':>22}"
        )
        published = PUBLISHED_MAE[row]
        figures = "".join(f" {published[paper][name] if paper in published else '':>15}" for paper in papers)
        lines.append(f"{label:<22} {ours}{figures}")
    lines.append("papers: " + "; ".join(PUBLISHED_SOURCES.values()) + " (their figures, not measured here)")
    return "\n".join(lines)


# --- the command ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gaga.evaluate_conditional", description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", type=Path, required=True, help="a property predictor's .ckpt (train.py)")
    parser.add_argument(
        "--generator", type=Path, default=None, help="a conditional generator's .ckpt; without it, only the baselines"
    )
    parser.add_argument("--samples", type=int, default=1000, help="molecules to generate")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling, the naive shuffle and the bootstrap")
    parser.add_argument("--batch-size", type=int, default=100, help="molecules per sampling batch")
    parser.add_argument(
        "--reference-molecules",
        type=int,
        default=None,
        help="score the baselines on this many random molecules of the second half (default: all 50,000, as EDM)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder of the dataset caches")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for option in ("samples", "batch_size", "reference_molecules"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    return args


def require_file(path: Path, option: str, training: str) -> None:
    """FileNotFoundError naming the option when `path` is not a file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass {option} the .ckpt that train.py {training} wrote")


def load_predictor(path: Path, device: str):
    """The property predictor of a checkpoint; ValueError (CheckpointError) saying why not."""
    from gaga.models.checkpoints import CheckpointError, load_model
    from gaga.models.property_predictor import PropertyPredictor

    require_file(path, "--predictor", "experiment=property_predictor_qm9")
    model = load_model(path, device)
    if not isinstance(model, PropertyPredictor):
        raise CheckpointError(
            f"{path}: not a property predictor (its model is {model.hparams.get('backbone')!r}); pass --predictor a "
            "checkpoint of experiment=property_predictor_qm9"
        )
    return model


def load_conditional_generator(path: Path, device: str, name: str, predictor_data: str):
    """The conditional generator of a checkpoint, conditioned on `name` and trained on the predictor's dataset;
    ValueError (CheckpointError) saying why not."""
    from gaga.models.checkpoints import CheckpointError, load_generator

    require_file(path, "--generator", f"a conditional experiment such as edm_cond_qm9 data.conditioning=[{name}]")
    model = load_generator(path, device)
    conditioning = model.hparams.dataset.get("conditioning")
    if not conditioning:
        raise CheckpointError(
            f"{path}: not a conditional generator (trained without data.conditioning); train one with "
            f"data.conditioning=[{name}] data.half=second"
        )
    names = list(conditioning["norms"]["names"])
    if name not in names:
        raise CheckpointError(
            f"{path}: the generator is conditioned on {names}, the predictor predicts {name}; pass a predictor of "
            f"{' or '.join(names)}, or a generator conditioned on {name}"
        )
    if model.hparams.dataset["name"] != predictor_data:
        raise CheckpointError(
            f"{path}: the generator was trained on {model.hparams.dataset['name']}, the predictor on {predictor_data}"
        )
    return model


def halves(data_dir: Path, name: str, remove_h: bool) -> dict[str, MoleculeSet]:
    """EDM's two halves of QM9's training split, with the values of property `name`."""
    from gaga.data.datamodule import MoleculeDataModule
    from gaga.data.qm9 import QM9

    found = {}
    for half in ("first", "second"):
        module = MoleculeDataModule(QM9(data_dir), remove_h=remove_h, conditioning=[name], half=half)
        module.setup()
        found[half] = module.splits["train"]
    return found


def evaluate(args: argparse.Namespace) -> tuple[dict[str, Estimate], dict]:
    """(row -> Estimate, what they were measured with: property, unit, files, counts)."""
    import torch

    from gaga.sampling import generate

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    predictor = load_predictor(args.predictor, device)
    name, data = predictor.property_name, predictor.hparams.dataset["name"]
    if data.removesuffix("_noH") != "qm9":
        raise ValueError(f"{args.predictor}: a predictor of {data}; EDM's conditional table is for QM9 only")
    generator = load_conditional_generator(args.generator, device, name, data) if args.generator else None
    data_halves = halves(args.data_dir, name, data.endswith("_noH"))
    second = data_halves["second"]
    if args.reference_molecules is not None and args.reference_molecules < len(second):
        picks = np.random.default_rng(args.seed).choice(len(second), args.reference_molecules, replace=False)
        second = second.subset(np.sort(picks))
    rows = baselines(predictor.predict_molecules, name, data_halves["first"], second, args.seed)
    if generator is not None:
        generated = generate(
            generator, args.samples, args.batch_size, seed=args.seed, progress=not args.quiet and interactive()
        )
        rows["generator"] = generator_estimate(predictor.predict_molecules, name, generated.molecules, args.seed)
    context = {
        "property": name,
        "unit": predictor.unit,
        "predictor": str(args.predictor),
        "generator": str(args.generator) if generator is not None else None,
        "samples": args.samples if generator is not None else 0,
        "seed": args.seed,
        "reference_molecules": len(second),
    }
    return rows, context


def json_report(rows: dict[str, Estimate], context: dict) -> dict:
    """The JSON file's contents: the context, our rows and, apart, the papers' figures for the property."""
    name = context["property"]
    return {
        **context,
        "rows": {row: rows[row].record() for row in ROW_LABELS if row in rows},
        "published": {row: {paper: by[name] for paper, by in papers.items()} for row, papers in PUBLISHED_MAE.items()},
        "published_sources": PUBLISHED_SOURCES,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows, context = evaluate(args)
    except (ValueError, FileNotFoundError) as error:  # CheckpointError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(rows, context["property"], context["unit"]))
    if args.out is not None:
        write_text_atomically(args.out, json.dumps(json_report(rows, context), indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

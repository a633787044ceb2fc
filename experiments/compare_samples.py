"""Side-by-side table of sample.py runs, with 95 % Wilson intervals for the per-molecule rates.

    python experiments/compare_samples.py "GAGA T*=511"=outputs/.../metrics.json "no GAGA"=outputs/.../metrics.json

Molecule stability, validity, valid x unique and connectedness are rates over the sampled molecules, so each gets a
binomial (Wilson) interval; atom stability is shown without one (atoms of a molecule are not independent).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

RATES = ("mol_stability", "validity", "valid_x_unique", "connected")


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion observed as `rate` over `n` trials."""
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def row(name: str, metrics: dict) -> str:
    n = int(metrics["num_molecules"])
    cells = [name, str(n), str(metrics["network_evaluations"]), f"{metrics['seconds_per_molecule']:.3f}"]
    cells.append(f"{100 * metrics['atom_stability']:.1f}")
    for key in RATES:
        low, high = wilson_interval(metrics[key], n)
        cells.append(f"{100 * metrics[key]:.1f} [{100 * low:.1f}, {100 * high:.1f}]")
    cells.append(f"{metrics['num_fragments']:.2f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=PATH to a metrics.json written by sample.py")
    args = parser.parse_args()
    header = ["arm", "molecules", "NFE", "s / molecule", "atom stab %"] + [f"{k} % [95 %]" for k in RATES]
    print("| " + " | ".join(header + ["fragments / mol"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    for run in args.runs:
        name, _, path = run.rpartition("=")
        if not name:
            raise SystemExit(f"error: {run!r}: give each run as NAME=PATH")
        print(row(name, json.loads(Path(path).read_text())))


if __name__ == "__main__":
    main()

"""How close is each variance choice's start Gaussian to the true z_T* on QM9? (issue 9: picks gaga.variance's default)

    python experiments/start_gaussian.py [--steps 450 550 650] [--seed 0] [--out experiments/results/start_gaussian.csv]

True z_t: EDM's training split (100,000 molecules, normalised, both blocks zero-meaned per molecule), noised with
EDM's schedule (polynomial_2, 1e-5, T = 1000) and the model's noise (standard normal projected to zero mean per
molecule in both blocks). Start: what the sampler draws for the same molecule sizes, projected standard normal noise
times sqrt(alpha_bar v_hat + 1 - alpha_bar) with each choice's start v_hat (gaga.gaussianity.choice). Per block:
KS = two-sample KS distance between the true and the start entries of each column, mean over columns; KL = the
Gaussian KL(N(0, var_true) || N(0, var_start)) per entry from the pooled empirical variances (the choices differ
only in variance), and the variance ratio var_start / var_true.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_setup import qm9_training_blocks, write_rows
from scipy.stats import ks_2samp

from gaga.config import DATA_DIR
from gaga.gaussianity import FEATURES, POSITIONS, center_per_molecule
from gaga.gaussianity.choice import VARIANCES, choose_variance

REPO_ROOT = Path(__file__).resolve().parents[1]
BOTH = (POSITIONS, FEATURES)


def projected_noise(shape, offsets, rng) -> np.ndarray:
    return center_per_molecule(rng.standard_normal(shape), offsets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", type=int, default=[450, 550, 650])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "results" / "start_gaussian.csv")
    args = parser.parse_args()

    start_time = time.perf_counter()
    blocks, offsets, alpha_bar, num_molecules = qm9_training_blocks(args.data_dir)
    starts = {choice: choose_variance(blocks, offsets, choice, BOTH)[1] for choice in VARIANCES}
    print(
        f"{num_molecules} molecules; start v_hat: "
        + "; ".join(f"{c} " + " / ".join(f"{starts[c][b]:.4f}" for b in BOTH) for c in VARIANCES)
    )
    rng = np.random.default_rng(args.seed)
    rows = []
    for t in args.steps:
        a = alpha_bar[t]
        for block in BOTH:
            x0 = blocks[block]
            true = np.sqrt(a) * x0 + np.sqrt(1 - a) * projected_noise(x0.shape, offsets, rng)
            var_true = float(np.mean(true**2))
            for choice in VARIANCES:
                scale = np.sqrt(a * starts[choice][block] + 1 - a)
                draw = scale * projected_noise(x0.shape, offsets, rng)
                ks = float(np.mean([ks_2samp(true[:, c], draw[:, c]).statistic for c in range(x0.shape[1])]))
                ratio = float(np.mean(draw**2)) / var_true
                kl = 0.5 * (1 / ratio - 1 + np.log(ratio))
                rows.append(
                    {
                        "t": t,
                        "block": block,
                        "choice": choice,
                        "start_var": scale**2,
                        "var_true": var_true,
                        "var_ratio": ratio,
                        "ks": ks,
                        "kl": kl,
                    }
                )
                print(
                    f"t {t}  {block:9s} {choice:9s} start var/dof {scale**2:.4f}  true var/entry {var_true:.4f}  "
                    f"ratio {ratio:.4f}  KS {ks:.4f}  KL {kl:.2e}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(rows, args.out)
    print(f"wrote {args.out} ({time.perf_counter() - start_time:.1f} s)")


if __name__ == "__main__":
    main()

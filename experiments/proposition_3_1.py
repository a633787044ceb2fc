"""Proposition 3.1 checked numerically: data closer to Gaussian in every cumulant order reach T* no later (issue 10,
part 5), in closed form and through GAGA's evaluator on samples, under EDM's schedule (polynomial_2, 1e-5, T = 1000).

    python experiments/proposition_3_1.py [--separations 0.5 0.7 0.85 0.95] [--molecules 5000] [--atoms 10]
                                          [--out experiments/results]

Data: x in R^2, x = a s (1, 1) + sqrt(1 - a^2) z with s = +-1 (probability 1/2 each) shared by both coordinates and
z ~ N(0, I): a symmetric two-component Gaussian mixture with component means +-(a, a) and unit variance per
coordinate for every a in [0, 1). Its cumulants are those of a s, since z adds only to the second: every entry of
the k-th cumulant tensor is a^k kappa_k(s) (kappa_4(s) = -2, kappa_6(s) = 16, odd orders 0) and the off-diagonal
covariance is a^2. So a smaller a is closer to Gaussian in every cumulant order, which is the proposition's premise.
On the VP path x_t = alpha_t x + sigma_t eps is the same mixture with a_t = alpha_t a (per-coordinate variance stays
1, so v_t = 1 and the reference Gaussian is N(0, 1) at every t), and C^(k)(x_t) = alpha_t^k C^(k)(x).

Closed form (population, no sampling): H^(K)(x_t) from the cumulants; D_t = sup |F_t - Phi|, F_t the mixture's
exact CDF; the evaluator's Dep is the mean of a column-pair MI and an atom-pair MI, and atoms are drawn independently
here, so its population value is MI(x_t1; x_t2) / 2, the MI from the exact density by quadrature. T_DS, T_ID and
T* = max(T_DS, T_ID) are their first steps at or below eps. The evaluator raises eps_dep to the 0.95 quantile of
Dep's null when that is higher; the table also gives the closed-form T_ID at the threshold it used.
Evaluator: find_t_star (dataset mode, default rules: isotonic T_ID with Dep's null, grid 50 then bisection) on
--molecules "molecules" of --atoms independent draws each (block "x", no zero-mean projection), with the closed-form
variance v_hat = 1. T_DS depends on eps_ds only and T_ID on eps_dep only (same seed: same draws and noise), so one
run per diagonal (eps_ds, eps_dep) pair gives every cell of the eps grid.
Prints the cumulants (closed form against scipy.stats.kstat on samples), T* per separation and eps in both ways, and
whether T* is ordered as the proposition says; writes proposition_3_1.csv and proposition_3_1.png under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.special import ndtr
from scipy.stats import kstat

from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import GaussianitySettings, VarianceEstimate, find_t_star

REPO_ROOT = Path(__file__).resolve().parents[1]
BLOCK = "x"
DIMENSION = 2
SIGN_CUMULANTS = {2: 1.0, 3: 0.0, 4: -2.0, 5: 0.0, 6: 16.0}  # cumulants of s = +-1 with probability 1/2
EPS_DS = (0.01, 0.02, 0.04)
EPS_DEP = (0.005, 0.01, 0.02)
UNIT_VARIANCE = VarianceEstimate("closed form", True, {BLOCK: 1.0}, {BLOCK: 1.0})


def mixture_cumulant(a, k: int):
    """k-th cumulant of one coordinate of the mixture (k >= 3), and every entry of its k-th joint cumulant tensor."""
    return np.asarray(a, dtype=np.float64) ** k * SIGN_CUMULANTS[k]


def sample_mixture(a: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws [n, 2] of x = a s (1, 1) + sqrt(1 - a^2) z."""
    signs = rng.choice([-1.0, 1.0], size=(n, 1))
    return a * signs + np.sqrt(1.0 - a**2) * rng.standard_normal((n, DIMENSION))


def functional_closed_form(a: float, alpha_bar: np.ndarray, order: int = 4, beta: float = 1.0) -> np.ndarray:
    """H^(K)(x_t) with unit weights (the evaluator's default): beta ||offdiag Cov||_F + sum_k ||C^(k)||_F."""
    a_t = np.sqrt(alpha_bar) * a
    value = beta * np.sqrt(DIMENSION * (DIMENSION - 1)) * a_t**2
    for k in range(3, order + 1):
        value = value + DIMENSION ** (k / 2) * np.abs(mixture_cumulant(a_t, k))
    return value


def ks_closed_form(a: float, alpha_bar: np.ndarray) -> np.ndarray:
    """D_t: sup_x |F_t(x) - Phi(x)| for one coordinate of x_t (the same for both), from the mixture's exact CDF."""
    mean = np.sqrt(alpha_bar)[:, None] * a
    spread = np.sqrt(1.0 - mean**2)
    x = np.linspace(0.0, 8.0, 4001)[None]  # F_t - Phi is odd in x, so x >= 0 suffices
    cdf = 0.5 * (ndtr((x - mean) / spread) + ndtr((x + mean) / spread))
    return np.abs(cdf - ndtr(x)).max(axis=1)


def dependence_closed_form(a: float, alpha_bar: np.ndarray, half_width: float = 8.0, points: int = 321) -> np.ndarray:
    """The evaluator's Dep in population: MI(x_t1; x_t2) / 2 (independent atoms add an atom-pair MI of 0), the MI by
    trapezoidal quadrature of the exact density on [-half_width, half_width]^2."""
    grid = np.linspace(-half_width, half_width, points)
    step = grid[1] - grid[0]
    out = np.empty(len(alpha_bar))
    for i, ab in enumerate(alpha_bar):
        mean, variance = np.sqrt(ab) * a, 1.0 - ab * a**2
        parts = [np.exp(-((grid - m) ** 2) / (2 * variance)) / np.sqrt(2 * np.pi * variance) for m in (mean, -mean)]
        joint = 0.5 * (np.outer(parts[0], parts[0]) + np.outer(parts[1], parts[1]))
        marginal = 0.5 * (parts[0] + parts[1])
        ratio = joint / np.outer(marginal, marginal)
        out[i] = 0.5 * np.sum(joint * np.log(np.where(joint > 0, ratio, 1.0))) * step**2
    return out


def first_step(values: np.ndarray, eps: float) -> int:
    """First t with values[t] <= eps (len(values) - 1 if none; these population curves all end below every eps)."""
    return int(np.argmax(values <= eps)) if (values <= eps).any() else len(values) - 1


def evaluator_run(a, eps_ds, eps_dep, molecules, atoms, alpha_bar, seed=0, **options):
    """find_t_star on molecules x atoms independent draws of the mixture (one block, v_hat = 1 in closed form)."""
    rng = np.random.default_rng([seed, int(round(a * 1e6))])
    blocks = {BLOCK: sample_mixture(a, molecules * atoms, rng)}
    offsets = np.arange(0, molecules * atoms + 1, atoms)
    settings = GaussianitySettings(
        eps_ds=eps_ds, eps_dep=eps_dep, zero_com_blocks=(), dataset_molecules=molecules, seed=seed, **options
    )
    return find_t_star(blocks, offsets, alpha_bar, settings, progress=False, variance=UNIT_VARIANCE)


def ordering(steps: list[int]) -> str:
    """How T* over increasing separations agrees with the proposition (T*_A < T*_B when A is closer to Gaussian);
    on integer steps two data sets that pass at t = 0 tie, so "non-decreasing" is the most a tie at 0 allows."""
    pairs = list(zip(steps, steps[1:], strict=False))
    if all(b > a for a, b in pairs):
        return "strictly increasing"
    return "non-decreasing" if all(b >= a for a, b in pairs) else "NOT ordered"


def print_cumulants(separations, rng) -> None:
    """Closed-form cumulants of one coordinate against scipy.stats.kstat (unbiased k-statistics) of 200,000 draws."""
    print("cumulants of one coordinate and the off-diagonal covariance: closed form / from 200,000 draws (kstat, cov)")
    for a in separations:
        x = sample_mixture(a, 200_000, rng)
        cells = [f"kappa_{k} {float(mixture_cumulant(a, k)):+.4f} / {kstat(x[:, 0], k):+.4f}" for k in (3, 4)]
        cells.append(f"cov_12 {a**2:.4f} / {np.cov(x.T)[0, 1]:.4f}")
        cells.append(f"kappa_6 {float(mixture_cumulant(a, 6)):+.4f}")
        print(f"a = {a:g}: kappa_2 1 / {kstat(x[:, 0], 2):.4f}, " + ", ".join(cells))


def plot(separations, alpha_bar, curves, table, path: Path) -> None:
    """H^(K), D_t and Dep against t: closed form solid, the evaluator on samples dashed, one colour per separation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(len(alpha_bar))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = [("H", "Gaussianity functional H^(4)(x_t)"), ("D", "KS distance D_t to N(0, 1)"), ("Dep", "Dep (nats)")]
    for i, a in enumerate(separations):
        colour = f"C{i}"
        t_star = next(
            r["T* closed form"] for r in table if r["a"] == a and r["eps_ds"] == 0.02 and r["eps_dep"] == 0.01
        )
        for axis, (kind, _) in zip(axes, panels, strict=True):
            axis.plot(steps, curves[a][kind], color=colour, linewidth=1.3, label=f"a = {a:g} closed form (T* {t_star})")
            result = curves[a]["evaluator"]
            points = [
                (t, v)
                for t, v in zip(result.curves["t"], result.curves[f"{kind}:{BLOCK}"], strict=True)
                if v is not None
            ]
            axis.plot(*zip(*points, strict=True), "--", color=colour, linewidth=1, label=f"a = {a:g} evaluator")
    for axis, (kind, label) in zip(axes, panels, strict=True):
        if kind == "H":
            axis.set_yscale("log")
            axis.set_ylim(bottom=1e-4)
        else:
            axis.set_yscale("symlog", linthresh=1e-3)
            axis.set_ylim(bottom=0)
            eps = 0.02 if kind == "D" else 0.01
            axis.axhline(eps, color="grey", linestyle=":", label=f"eps = {eps:g}")
        axis.set_xlabel("diffusion step t (polynomial_2, 1e-5, T = 1000)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(
        "Proposition 3.1: mixtures +-(a, a) with unit variance; smaller a = closer to Gaussian in every order"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=72, pil_kwargs={"optimize": True})
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--separations", nargs="+", type=float, default=[0.5, 0.7, 0.85, 0.95])
    parser.add_argument("--molecules", type=int, default=5000)
    parser.add_argument("--atoms", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "results")
    args = parser.parse_args()
    from tqdm.auto import tqdm

    separations = sorted(args.separations)
    alpha_bar = NoiseSchedule("polynomial_2", 1000, 1e-5).alpha_bar()
    print_cumulants(separations, np.random.default_rng(1))
    curves, table = {}, []
    with tqdm(total=len(separations) * len(EPS_DS), desc="evaluator runs") as bar:
        for a in separations:
            closed = {
                "H": functional_closed_form(a, alpha_bar),
                "D": ks_closed_form(a, alpha_bar),
                "Dep": dependence_closed_form(a, alpha_bar),
            }
            runs = {}
            for eps_ds, eps_dep in zip(EPS_DS, EPS_DEP, strict=True):
                runs[eps_ds, eps_dep] = evaluator_run(a, eps_ds, eps_dep, args.molecules, args.atoms, alpha_bar)
                bar.update(1)
            curves[a] = {**closed, "evaluator": runs[0.02, 0.01]}
            t_ds = {e: runs[e, d].t_ds[BLOCK] for e, d in runs}
            t_id = {d: runs[e, d].t_id[BLOCK] for e, d in runs}
            eps_used = {d: runs[e, d].summary["eps_dep_used"][BLOCK] for e, d in runs}
            for eps_ds in EPS_DS:
                for eps_dep in EPS_DEP:
                    population = (first_step(closed["D"], eps_ds), first_step(closed["Dep"], eps_dep))
                    table.append(
                        {
                            "a": a,
                            "eps_ds": eps_ds,
                            "eps_dep": eps_dep,
                            "H(x_0) closed form": round(float(closed["H"][0]), 5),
                            "H(x_0) evaluator": round(float(runs[0.02, 0.01].curves[f"H:{BLOCK}"][0]), 5),
                            "T_DS closed form": population[0],
                            "T_ID closed form": population[1],
                            "T* closed form": max(population),
                            "T_DS evaluator": t_ds[eps_ds],
                            "T_ID evaluator": t_id[eps_dep],
                            "evaluator's eps_dep (raised to Dep's null)": round(eps_used[eps_dep], 4),
                            "T_ID closed form at that eps": first_step(closed["Dep"], eps_used[eps_dep]),
                            "T* evaluator": max(t_ds[eps_ds], t_id[eps_dep]),
                        }
                    )
    print("\n" + " | ".join(table[0]))
    for row in table:
        print(" | ".join(str(v) for v in row.values()))
    print("\nT* in increasing a, and how it is ordered (Proposition 3.1: increasing):")
    for eps_ds in EPS_DS:
        for eps_dep in EPS_DEP:
            rows = [r for r in table if r["eps_ds"] == eps_ds and r["eps_dep"] == eps_dep]
            line = []
            for source in ("closed form", "evaluator"):
                steps = [r[f"T* {source}"] for r in rows]
                line.append(f"{source} {steps} {ordering(steps)}")
            print(f"eps_ds {eps_ds}, eps_dep {eps_dep}: " + "; ".join(line))
    args.out.mkdir(parents=True, exist_ok=True)
    from bench_setup import write_rows  # beside this script; tests import this module without experiments/ on the path

    write_rows(table, args.out / "proposition_3_1.csv")
    plot(separations, alpha_bar, curves, table, args.out / "proposition_3_1.png")
    print(f"wrote {args.out / 'proposition_3_1.csv'} and {args.out / 'proposition_3_1.png'}")


if __name__ == "__main__":
    main()

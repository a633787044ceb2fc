"""When noised molecules and noised images become Gaussian under one evaluator and one schedule (issue 10, part 4).

    python experiments/gaussian_onset.py [--sets qm9 geoldm digits patches] [--geoldm-molecules 5000]
                                         [--out experiments/results]

Evaluator: gaga.gaussianity.find_t_star in dataset mode with its default settings (eps_ds 0.02, eps_dep 0.01,
"exact" variance, isotonic T_ID rule with Dep's null, grid 50 then bisection, 5,000 sampled "molecules") under
EDM's schedule (polynomial_2, precision 1e-5, T = 1000). Data sets:
- QM9: EDM's training split (100,000 molecules), coordinates and one-hot / 4 zero-meaned per molecule (EDM's
  normalisation), both blocks noised with zero-mean projected noise as a GAGA model noises them;
- GeoLDM: its encoder's latents (published 1-block encoder, 256 wide, seed 42 initial weights, as
  experiments/tstar_backbones.py builds them) of a seeded subset of --geoldm-molecules training molecules;
- digits: scikit-learn's 8x8 digits (1,797 images), grey levels 0..16 mapped linearly to [-1, 1];
- patches: the non-overlapping 16x16 patches of eight photographs scikit-image ships (camera, astronaut, coins,
  moon, coffee, chelsea, rocket, clock; colour ones converted to grey), grey levels mapped to [-1, 1].
Images keep their own mean (no per-image or dataset centring) and get plain i.i.d. noise, as image diffusion has it.

How an image is read (the table's "reading" column):
- "nodes" (the evaluator as it is): an image is a molecule whose atoms are its pixels, with one feature, fed to
  find_t_star unchanged. This is the layout dataset mode is defined on: DatasetSample needs >= 2 nodes per sample,
  computes D_t over all nodes of a column pooled, Dep from node pairs of one sample when a block has one column,
  and H^(K) with nodes as draws; so D_t, Dep and H^(K) are computed exactly as for QM9's atoms. The whole image
  as one vector would be a one-node molecule, which dataset mode refuses.
- "nodes, second-moment v_hat" (control): the same, tested against N(0, v_t) with v_hat the images' second moment
  about 0 (estimator "ml") instead of GAGA's within-sample variance, which leaves out the spread of image means.
- "pixels": the paper's definitions with one dimension per pixel and images as samples (pixels are not
  exchangeable the way atoms are for an equivariant network). D_fit: mean over pixels of the KS distance to the
  pixel's own fitted normal (the issue's per-pixel KS; against the fixed N(0, v_t) a pixel's KS could not pass at
  all with 1,797 digits, its null mean 0.87 / sqrt(n) = 0.0205 being above eps_ds); Dep over random pixel pairs
  with find_t_star's null and T_ID rule; H^(2) = ||offdiag Cov||_F of the image vector. Orders k >= 3 are left
  out there: the sampling floor of ||C^(k)||_F grows as d^(k/2) / sqrt(n) and swamps the signal at d = 64 or 256.
- "pixels, mean removed per image (diagnostic)": the pixel reading of the images minus each image's own mean, to
  show how much of the pixel-pair dependence that mean carries (the images themselves keep it everywhere else).
"T_DS of the mean alone" is the step at which the data's mean alone (mu_t = alpha_t mean(x)) puts the KS distance
below eps_ds (mean_shift_step): 0 for zero-meaned molecules.

H^(K) is in each data set's own units (cumulants are not standardised), so its level does not rank data sets; its
decay follows the cumulant scaling laws (functional.functional_along_t).
Writes gaussian_onset.csv (T* table), gaussian_onset_curves.csv and gaussian_onset.png under --out.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from bench_setup import backbone_config, qm9_training_blocks, write_rows
from scipy.special import ndtr

from gaga.diffusion.schedules import NoiseSchedule
from gaga.gaussianity import GaussianitySettings, VarianceEstimate, estimate_variance, find_t_star, functional_along_t
from gaga.gaussianity.dataset_mode import first_below
from gaga.gaussianity.ks import ks_statistic
from gaga.gaussianity.mutual_info import ksg_mutual_information_large
from gaga.gaussianity.tstar import dep_threshold

REPO_ROOT = Path(__file__).resolve().parents[1]
PIXELS = "pixels"
PATCH = 16
PHOTOS = ("camera", "astronaut", "coins", "moon", "coffee", "chelsea", "rocket", "clock")
SETS = ("qm9", "geoldm", "digits", "patches")
SECOND_MOMENT = "nodes, second-moment v_hat"
CENTRED = "pixels, mean removed"
PIXEL_READINGS = {"pixels": "pixels, fitted normal per pixel", CENTRED: "pixels, mean removed per image (diagnostic)"}
LABELS = {"positions": "coordinates", "features": "atom features"}


def digits() -> np.ndarray:
    """[1797, 64] grey levels 0..16 mapped to [-1, 1]."""
    from sklearn.datasets import load_digits

    return load_digits().data / 8.0 - 1.0


def patches(size: int = PATCH) -> np.ndarray:
    """[n, size * size] non-overlapping patches of scikit-image's photographs, grey levels mapped to [-1, 1]."""
    from skimage import data
    from skimage.color import rgb2gray

    rows = []
    for name in PHOTOS:
        image = getattr(data, name)()
        grey = rgb2gray(image) if image.ndim == 3 else image / 255.0
        h, w = (s - s % size for s in grey.shape)
        tiles = grey[:h, :w].reshape(h // size, size, w // size, size).swapaxes(1, 2)
        rows.append(tiles.reshape(-1, size * size))
    return np.concatenate(rows) * 2.0 - 1.0


def require_scikit_image() -> None:
    try:
        import skimage  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            "gaussian_onset: the patches need scikit-image; install the experiments extra: "
            "pip install -e '.[experiments]' (or leave patches out: --sets qm9 geoldm digits)"
        ) from error


def geoldm_blocks(data_dir: Path, molecules: int):
    """(blocks, offsets, zero-mean blocks) of GeoLDM's latents of a seeded subset of QM9's training split."""
    from gaga.data.datamodule import MoleculeDataModule
    from gaga.data.qm9 import QM9
    from gaga.models.build import build

    datamodule = MoleculeDataModule(QM9(data_dir), eval_batch_size=512, subset={"train": molecules})
    dataset = datamodule.model_description()
    torch.manual_seed(42)
    model = build(backbone_config("geoldm", 256, layers=1), dataset=dataset, zero_mean_features=True).eval()
    with torch.no_grad():
        blocks, offsets = model.gaussianity_data(datamodule.ordered_loader("train"))
    return blocks, offsets, tuple(model.zero_mean_blocks)


def pixel_view(name: str, x: np.ndarray, alpha_bar: np.ndarray, settings: GaussianitySettings, reading="pixels"):
    """Table row and curves of images x [n, d] read with one dimension per pixel (module docstring): D_fit, Dep over
    pixel pairs (null and T_ID rule as find_t_star's) and H^(2) of the image vector."""
    rng = np.random.default_rng(settings.seed)
    noise = rng.standard_normal(x.shape)
    pairs = list(combinations(range(x.shape[1]), 2))
    pairs = [pairs[i] for i in sorted(rng.permutation(len(pairs))[: settings.max_column_pairs])]
    k = settings.k_for(PIXELS)

    def dependence(z: np.ndarray) -> float:
        estimates = [ksg_mutual_information_large(z[:, a], z[:, b], k, clip=False) for a, b in pairs]
        return max(float(np.mean(estimates)), 0.0)

    def noised(t: int) -> np.ndarray:
        return np.sqrt(alpha_bar[t]) * x + np.sqrt(1.0 - alpha_bar[t]) * noise

    def ks_fitted(t: int) -> float:
        z = noised(t)
        return float(ks_statistic(((z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-12)).T).mean())

    values = {"D_fit": {}, "Dep": {}}
    statistics = {"D_fit": ks_fitted, "Dep": lambda t: dependence(noised(t))}

    def cached(kind: str):
        def evaluate(t: int) -> float:
            if t not in values[kind]:
                values[kind][t] = statistics[kind](t)
            return values[kind][t]

        return evaluate

    bisection = settings.search == "bisection"
    grid = np.unique(np.append(np.arange(0, len(alpha_bar), settings.grid_step), len(alpha_bar) - 1))
    null = [
        dependence(np.random.default_rng([settings.seed, 7919, i]).standard_normal(x.shape))
        for i in range(settings.dep_null_draws)
    ]
    eps_dep = dep_threshold(settings, null)
    t_ds = first_below(cached("D_fit"), grid, settings.eps_ds, bisection)
    t_id = first_below(cached("Dep"), grid, eps_dep, bisection, settings.t_id_rule)
    h = functional_along_t(x, alpha_bar[grid], order=2)
    t_star = None if None in (t_ds, t_id) else max(t_ds, t_id)
    table = [record(name, PIXEL_READINGS[reading], len(x), "", t_ds, "", t_id, eps_dep, t_star, t_star, h[0])]
    curves = [point(name, reading, t, kind, v) for kind, column in values.items() for t, v in sorted(column.items())]
    curves += [point(name, reading, t, "H", v) for t, v in zip(grid, h, strict=True)]
    return table, curves


def evaluate(name, blocks, offsets, zero_com, alpha_bar, settings, reading="nodes, exact v_hat", variance=None):
    """Table rows and curves of one data set through find_t_star, one row per block (`variance` None: the settings')."""
    result = find_t_star(blocks, offsets, alpha_bar, replace(settings, zero_com_blocks=zero_com), variance=variance)
    variance = VarianceEstimate.from_dict(result.variance)
    table, curves = [], []
    for block in result.t_star_by_block:
        label = f"{name} {LABELS.get(block, block)}" if len(blocks) > 1 else name
        component = variance.component(block)
        h = result.curves[f"H:{block}"]
        table.append(
            record(
                label,
                reading,
                result.summary["molecules"],
                round(variance.data[component] / variance.noise[component], 5),
                result.t_ds[block],
                mean_shift_step(blocks[block], alpha_bar, settings.eps_ds),
                result.t_id[block],
                result.summary["eps_dep_used"][block],
                result.t_star_by_block[block],
                result.t_star,
                h[0],
            )
        )
        for kind in ("D", "Dep", "H"):
            column = result.curves[f"{kind}:{block}"]
            curves += [
                point(label, reading, t, kind, v)
                for t, v in zip(result.curves["t"], column, strict=True)
                if v is not None
            ]
    return table, curves


def mean_shift_step(values: np.ndarray, alpha_bar: np.ndarray, eps_ds: float) -> int:
    """First t at which the mean alone puts D_t below eps_ds: the KS distance 2 Phi(|mu_t| / (2 s_t)) - 1 between
    N(mu_t, s_t^2) and N(0, s_t^2), mu_t = alpha_t mean(x), s_t^2 = alpha_bar_t Var(x) + 1 - alpha_bar_t (pooled)."""
    shift = np.sqrt(alpha_bar) * abs(values.mean()) / (2 * np.sqrt(alpha_bar * values.var() + 1 - alpha_bar))
    return int(np.argmax(2 * ndtr(shift) - 1 <= eps_ds))


def record(name, reading, samples, v_hat, t_ds, t_mean, t_id, eps_dep, t_block, t_star, h0) -> dict:
    return {
        "data set": name,
        "reading": reading,
        "samples": samples,
        "v_hat": v_hat,
        "T_DS": t_ds,
        "T_DS of the mean alone": t_mean,
        "T_ID": t_id,
        "eps_dep used": round(float(eps_dep), 4),
        "T* (block)": t_block,
        "T* (data set)": t_star,
        "H(x_0)": round(float(h0), 4),
    }


def point(name: str, reading: str, t, statistic: str, value) -> dict:
    return {"data set": name, "reading": reading, "t": int(t), "statistic": statistic, "value": float(value)}


def plot(curves: list[dict], table: list[dict], settings: GaussianitySettings, path: Path) -> None:
    """D_t, Dep and H against t: one colour per data set; the evaluator solid, the second-moment control dash-dot,
    the pixel reading dashed and its mean-removed diagnostic dotted (their D panel shows D_fit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(c["data set"] for c in curves))
    colours = {n: f"C{i}" for i, n in enumerate(names)}
    t_star = {(r["data set"], r["reading"]): r["T* (block)"] for r in table}
    styles = {"nodes, exact v_hat": "-", SECOND_MOMENT: "-.", "pixels": "--", CENTRED: ":"}
    panels = [
        ("D", "KS distance D_t", settings.eps_ds, "eps_ds"),
        ("Dep", "Dep: mean KSG MI (nats)", settings.eps_dep, "eps_dep (before the null)"),
        ("H", "Gaussianity functional H(x_t)", None, ""),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(16, 6.4))
    for axis, (kind, ylabel, eps, eps_name) in zip(axes, panels, strict=True):
        series = {}
        for c in curves:
            if c["statistic"] == kind or (kind == "D" and c["statistic"] == "D_fit"):
                series.setdefault((c["data set"], c["reading"]), []).append((c["t"], c["value"]))
        for (name, reading), points in series.items():
            steps, values = zip(*sorted(points), strict=True)
            reached = next((v for (n, r), v in t_star.items() if n == name and r.startswith(reading)), None)
            label = f"{name}, {reading} (T* {reached})"
            axis.plot(steps, values, styles[reading], color=colours[name], label=label, linewidth=1.2)
        if eps is not None:
            axis.axhline(eps, color="grey", linestyle=":", linewidth=1, label=f"{eps_name} = {eps:g}")
        if kind == "H":  # cumulant scaling: decays as alpha_bar_t^(k/2) to about 1e-8 at t = T
            axis.set_yscale("log")
            axis.set_ylim(bottom=1e-4)
        else:  # D and Dep reach 0 or its neighbourhood: linear below 1e-3
            axis.set_yscale("symlog", linthresh=1e-3)
            axis.set_ylim(bottom=0)
        axis.set_xlabel("diffusion step t (polynomial_2, 1e-5, T = 1000)")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.suptitle(
        "Gaussian onset under GAGA's dataset-mode evaluator: molecules (atoms as nodes) and images (pixels as nodes "
        "solid / dash-dot, pixels as dimensions dashed / dotted)",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.17, 1, 1))
    figure.savefig(path, dpi=72, pil_kwargs={"optimize": True})
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--geoldm-molecules", type=int, default=5000, help="training molecules GeoLDM encodes")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "results")
    args = parser.parse_args()
    if "patches" in args.sets:
        require_scikit_image()
    settings = GaussianitySettings()
    print(f"evaluator settings: {settings.to_dict()}")
    alpha_bar = NoiseSchedule("polynomial_2", 1000, 1e-5).alpha_bar()
    found = []
    if "qm9" in args.sets:
        blocks, offsets, _, molecules = qm9_training_blocks(args.data_dir)
        print(f"QM9: {molecules} training molecules")
        found.append(evaluate("QM9", blocks, offsets, tuple(blocks), alpha_bar, settings))
    if "geoldm" in args.sets:
        blocks, offsets, zero_com = geoldm_blocks(args.data_dir, args.geoldm_molecules)
        found.append(evaluate("GeoLDM latent", blocks, offsets, zero_com, alpha_bar, settings))
    for name, load in (("digits", digits), ("patches", patches)):
        if name in args.sets:
            images = load()
            print(f"{name}: {images.shape[0]} images x {images.shape[1]} pixels, mean {images.mean():.3f}")
            blocks, offsets = {PIXELS: images.reshape(-1, 1)}, np.arange(0, images.size + 1, images.shape[1])
            second_moment = estimate_variance(blocks, offsets, "ml", True, ())
            found.append(evaluate(name, blocks, offsets, (), alpha_bar, settings))
            found.append(evaluate(name, blocks, offsets, (), alpha_bar, settings, SECOND_MOMENT, second_moment))
            found.append(pixel_view(name, images, alpha_bar, settings))
            centred = images - images.mean(axis=1, keepdims=True)
            found.append(pixel_view(name, centred, alpha_bar, settings, CENTRED))
    table = [row for rows, _ in found for row in rows]
    curves = [c for _, cs in found for c in cs]
    args.out.mkdir(parents=True, exist_ok=True)
    print("\n" + " | ".join(table[0]))
    for entry in table:
        print(" | ".join(str(v) for v in entry.values()))
    for rows, name in ((table, "gaussian_onset.csv"), (curves, "gaussian_onset_curves.csv")):
        write_rows(rows, args.out / name)
        print(f"wrote {args.out / name}")
    plot(curves, table, settings, args.out / "gaussian_onset.png")
    print(f"wrote {args.out / 'gaussian_onset.png'}")


if __name__ == "__main__":
    main()

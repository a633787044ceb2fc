"""T* without training: `python -m gaga.tstar [-m] gaga.eps_ds=0.01,0.02 gaga.eps_dep=0.005,0.01` (or `gaga-tstar`).

Each job builds the configured data and backbone (seeded with `seed`, as train.py does, so that GeoLDM's random
encoder is the one a training run builds) and finds T* on the training data exactly as the
GaussianityCallback does before fit (the same cache under paths.data_dir/tstar, the same gaussianity/ files in its
run folder); nothing is trained. A multirun ends with one table (tstar_sweep.csv: eps -> T_ID, T_DS, T*) and one
plot (tstar_sweep.png) in the sweep folder, written by `SweepTable`.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gaga.config import CONFIG_DIR
from gaga.console import quiet_third_party, say

log = logging.getLogger("gaga")

TABLE_FILE, PLOT_FILE = "tstar_sweep.csv", "tstar_sweep.png"


def find(cfg: DictConfig):
    """(the evaluator's TStarResult for the configured data, backbone and gaga settings (cached), the backbone's T);
    ValueError saying what to change when the configuration has no T* to find."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from gaga.cli import _instantiate, build_model

    if not cfg.get("gaga") or "_target_" not in cfg.gaga:
        raise ValueError("gaga=off has no T* to find; pick an evaluator (gaga=dataset or gaga=per_molecule)")
    # seeded as train.py is: a backbone with random fixed weights (GeoLDM's encoder) is the one training builds
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    callback = _instantiate(cfg.gaga)  # settings checked before the data load
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    model.check_truncatable(callback.features)
    if not model.gaussianity_ready:
        raise ValueError("this backbone's latents are final only after training its autoencoder; train it")
    return callback.evaluate(datamodule, model), model.schedule.timesteps


@hydra.main(config_path=str(CONFIG_DIR), config_name="tstar", version_base="1.3")
def main(cfg: DictConfig) -> int:
    """Returns T* (the backbone's T when Gaussianity is never reached)."""
    quiet_third_party()
    start = time.perf_counter()
    try:
        result, timesteps = find(cfg)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    settings = result.settings
    say(
        log,
        f"T*: eps_ds {settings['eps_ds']:g}  eps_dep {settings['eps_dep']:g}  ->  T_ID {result.t_id}  "
        f"T_DS {result.t_ds}  T* {result.t_star} of T = {timesteps}  ({time.perf_counter() - start:.1f} s)",
    )
    return result.truncation_step(timesteps)


def sweep_rows(sweep_dir: Path) -> list[dict]:
    """One row per job of a sweep folder that holds a T* result: its eps settings, T_ID, T_DS and T* per block."""
    from gaga.gaussianity import TStarResult

    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / "gaussianity").is_dir()), key=lambda p: int(p.name))
    for job in jobs:
        result = TStarResult.load(job / "gaussianity")
        row = {"job": int(job.name), "eps_ds": result.settings["eps_ds"], "eps_dep": result.settings["eps_dep"]}
        for kind, values in (("T_ID", result.t_id), ("T_DS", result.t_ds), ("T*", result.t_star_by_block)):
            row.update({f"{kind} {block}": step for block, step in values.items()})
        rows.append({**row, "T*": result.t_star})
    return rows


def write_table(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])


def plot_sweep(rows: list[dict], path: Path) -> None:
    """T_DS against eps_ds and T_ID against eps_dep, one line per block, with every job's T* as a point (T* depends
    on both thresholds); steps never reached are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [name.removeprefix("T_ID ") for name in rows[0] if name.startswith("T_ID ")]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, eps, kind in zip(axes, ("eps_ds", "eps_dep"), ("T_DS", "T_ID"), strict=True):
        for column in [f"{kind} {b}" for b in blocks] + ["T*"]:
            points = sorted({(row[eps], row[column]) for row in rows if row[column] is not None})
            if points:
                style = {"marker": "s", "linestyle": "none", "color": "black"} if column == "T*" else {"marker": "o"}
                axis.plot(*zip(*points, strict=True), label=column, **style)
        axis.set_xlabel(eps)
        axis.set_ylabel("step t")
        axis.legend(fontsize=7)
    figure.suptitle(f"GAGA T* sweep ({len(rows)} jobs)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


class SweepTable(Callback):
    """Hydra callback: after a multirun of gaga.tstar, one table and one plot of the whole sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep_dir)
        if not rows:
            return
        write_table(rows, sweep_dir / TABLE_FILE)
        plot_sweep(rows, sweep_dir / PLOT_FILE)
        columns = list(rows[0])
        widths = [max(len(c), *(len(f"{row[c]}") for row in rows)) for c in columns]
        lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
        lines += ["  ".join(f"{row[c]}".rjust(w) for c, w in zip(columns, widths, strict=True)) for row in rows]
        print("\n".join(lines))
        say(log, f"T* sweep of {len(rows)} jobs: {sweep_dir / TABLE_FILE}, {sweep_dir / PLOT_FILE}")


if __name__ == "__main__":
    main()

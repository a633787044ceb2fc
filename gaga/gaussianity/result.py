"""TStarResult: T_ID, T_DS, T* per block and overall, with v_hat, settings and curves; JSON round trip, CSV and PNG.

Curves are columns over "t": "D:<block>", "Dep:<block>" (dataset mode), "reached:<criterion>" (per-molecule mode:
fraction of tested molecules whose T <= t), "H:<block>" and "v:<block>"; None marks a step a column skipped.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULT_FILE, CURVES_FILE, PLOT_FILE = "tstar.json", "tstar_curves.csv", "tstar.png"


@dataclass
class TStarResult:
    mode: str
    t_star: int | None
    t_star_by_block: dict[str, int | None]
    t_id: dict[str, int | None]
    t_ds: dict[str, int | None]
    variance: dict
    settings: dict
    curves: dict[str, list] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def truncation_step(self, timesteps: int) -> int:
        """T* as a step to truncate at: the full trajectory (`timesteps`) when Gaussianity was never reached, and
        at least 1 (one denoising step) when the data already passed the test at t = 0."""
        return timesteps if self.t_star is None else max(1, int(self.t_star))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> TStarResult:
        return cls(**record)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> TStarResult:
        return cls.from_dict(json.loads(text))

    def save(self, out_dir: str | Path, plot: bool = True) -> dict[str, Path]:
        """Write tstar.json, tstar_curves.csv and (plot=True) tstar.png into `out_dir`; return their paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"result": out_dir / RESULT_FILE, "curves": out_dir / CURVES_FILE}
        paths["result"].write_text(self.to_json())
        with paths["curves"].open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(self.curves))
            columns = [["" if v is None else v for v in column] for column in self.curves.values()]
            writer.writerows(zip(*columns, strict=True))
        if plot:
            paths["plot"] = out_dir / PLOT_FILE
            self.plot(paths["plot"])
        return paths

    @classmethod
    def load(cls, out_dir: str | Path) -> TStarResult:
        path = Path(out_dir) / RESULT_FILE
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{path}: not a readable T* result ({error}); rerun find_t_star and save it") from error

    def panels(self) -> list[tuple[str, dict[str, tuple[list, list]], float | None]]:
        """Per statistic present (D, Dep, reached, H, v): its curves as {block: (steps, values)} without the
        steps it skipped, and its threshold (eps_ds for D, eps_dep for Dep, else None). The PNG and W&B draw these."""
        thresholds = {"D": self.settings.get("eps_ds"), "Dep": self.settings.get("eps_dep")}
        panels = []
        for kind in ("D", "Dep", "reached", "H", "v"):
            series = {}
            for name, values in self.curves.items():
                if name.startswith(kind + ":"):
                    points = [(t, v) for t, v in zip(self.curves["t"], values, strict=True) if v is not None]
                    series[name.split(":", 1)[1]] = ([t for t, _ in points], [v for _, v in points])
            if series:
                panels.append((kind, series, thresholds.get(kind)))
        return panels

    def plot(self, path: str | Path) -> None:
        """PNG of the curves: one labelled panel per statistic (three per row), thresholds dashed, T* as a vertical
        line, and on the Dep panel the band of Dep's null (its values on pure noise, dataset mode) per block."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = self.panels()
        columns = min(3, len(panels))
        rows = -(-len(panels) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 3.8 * rows), squeeze=False)
        null = self.summary.get("dep_null") or {}
        used = self.summary.get("eps_dep_used") or {}
        for axis, (kind, series, threshold) in zip(axes.flat, panels, strict=False):
            for label, (steps, values) in series.items():
                (line,) = axis.plot(steps, values, marker=".", markersize=3, label=label)
                if kind == "Dep" and null.get(label):
                    axis.axhspan(
                        min(null[label]),
                        max(null[label]),
                        color=line.get_color(),
                        alpha=0.15,
                        label=f"null {label} ({len(null[label])} draws)",
                    )
                if kind == "Dep" and label in used and used[label] != threshold:
                    axis.axhline(
                        used[label], color=line.get_color(), linestyle=":", label=f"eps used {used[label]:.3g}"
                    )
            if threshold is not None:
                axis.axhline(threshold, color="grey", linestyle="--", label=f"eps = {threshold:g}")
            if self.t_star is not None:
                axis.axvline(self.t_star, color="black", linewidth=1, label=f"T* = {self.t_star}")
            if kind in ("D", "Dep", "H"):  # thresholds sit near zero: a log scale shows the crossing
                axis.set_yscale("symlog", linthresh=1e-3)
                axis.set_ylim(bottom=0)
            axis.set_xlabel("diffusion step t")
            axis.set_ylabel(AXIS_LABELS.get(kind, kind))
            axis.set_title(TITLES.get(kind, kind))
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        for axis in list(axes.flat)[len(panels) :]:
            axis.set_visible(False)
        figure.suptitle(f"GAGA Gaussianity ({self.mode} mode, T* = {self.t_star})")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)


AXIS_LABELS = {
    "D": "KS distance D_t to N(0, v_t)",
    "Dep": "Dep: mean KSG MI (nats)",
    "reached": "fraction of molecules with T <= t",
    "H": "Gaussianity functional H(x_t)",
    "v": "closed-form variance v_t",
}
TITLES = {
    "D": "distribution similarity (T_DS)",
    "Dep": "dependence (T_ID)",
    "reached": "per-molecule first double pass",
    "H": "Proposition 3.1 functional",
    "v": "reference Gaussian's variance",
}

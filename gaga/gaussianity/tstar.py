"""find_t_star: GAGA's characteristic step T* of a dataset under a noise schedule, and its settings.

Modes: "dataset" (the paper: T_ID, T_DS, T* = max per block, overall the latest block) and "per_molecule"
(QuJX/GAGA's public procedure: per-molecule first double passes, mean or quantile over molecules).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from gaga.gaussianity.blocks import FEATURES, POSITIONS, SizeGroups, validate_blocks
from gaga.gaussianity.choice import VARIANCES, choose_variance
from gaga.gaussianity.closed_form import alpha_bar_at, block_alpha_bar, marginal_variance
from gaga.gaussianity.dataset_mode import DatasetSample, dependence_null, first_below
from gaga.gaussianity.functional import functional_along_t
from gaga.gaussianity.reference_procedure import NOT_REACHED, OVERALL, PerMoleculePlan, first_passing_steps
from gaga.gaussianity.result import TStarResult
from gaga.gaussianity.variance import VarianceEstimate, centre_kept_blocks

MODES = ("dataset", "per_molecule")
# the evaluator's version, part of every T* cache key: raise it whenever a change alters what find_t_star computes
# for the same inputs, so that caches of the old evaluator are not reused (2: per-column moments of kept blocks)
EVALUATOR_VERSION = 2
DEFAULT_K = 3
REFERENCE_GRID = tuple(range(300, 801, 50))


@dataclass(frozen=True)
class GaussianitySettings:
    """Evaluator settings (flat, for Hydra). Fields that apply to one mode say so.

    variance: the variance choice (gaussianity.choice) that sets both the tested Gaussian and the sampler's start:
    "exact", "paper" or "reference"; "auto" means "exact" in dataset mode and "reference" in per_molecule mode.
    grid None means 0..T every grid_step (dataset) or 300, 350, ..., 800 (per_molecule). k_neighbors maps
    block -> k (others use 3); tested_blocks None = all;
    functional_weights None = 1 for every order 3..functional_order.
    single_precision: per-molecule k-NN distances in float32 (about 2x faster, see mutual_info).
    Dataset mode's T_ID (the paper's, made robust to estimator noise): Dep's null is measured on dep_null_draws
    draws of pure forward noise of the sampled molecules; the threshold is max(eps_dep, the null's
    dep_null_quantile); t_id_rule "monotone" (default) takes the first grid t at which the non-increasing
    (isotonic) fit of the Dep curve is below it, "stays" the first grid t after which Dep stays below it, "first"
    the paper's literal first t below (dataset_mode.first_below). dep_null_draws=0 and t_id_rule="first" is the
    paper's rule exactly.
    zero_com_blocks: the blocks whose forward noise is projected to zero mean per molecule; the callback sets it from
    the model (`DiffusionBackbone.zero_mean_blocks`: both blocks under gaga.features=centred), so the evaluator
    noises as the model.
    kept_blocks: blocks that keep their mean (gaga.features=kept: the atom features): each column is tested against
    N(sqrt(alpha_bar_t) m_j, alpha_bar_t v_j + 1 - alpha_bar_t) with the data's column mean m_j and variance v_j
    (variance "exact" only).
    """

    mode: str = "dataset"
    eps_dep: float = 0.01
    eps_ds: float = 0.02
    search: str = "bisection"
    grid: tuple[int, ...] | None = None
    grid_step: int = 50
    tested_blocks: tuple[str, ...] | None = None
    zero_com_blocks: tuple[str, ...] = (POSITIONS,)
    kept_blocks: tuple[str, ...] = ()
    variance: str = "auto"
    k_neighbors: dict[str, int] = field(default_factory=lambda: {POSITIONS: 2, FEATURES: 3})
    dataset_molecules: int = 5000
    max_column_pairs: int = 16
    alpha: float = 0.05
    mi_threshold: float = 0.1
    min_atoms: int = 4
    per_molecule_sample: int | None = None
    aggregate: str = "mean"
    quantile: float = 0.95
    single_precision: bool = True
    functional_order: int = 4
    functional_beta: float = 1.0
    functional_weights: tuple[float, ...] | None = None
    t_id_rule: str = "monotone"
    dep_null_draws: int = 8
    dep_null_quantile: float = 0.95
    seed: int = 0
    workers: int = 2

    def __post_init__(self):
        choices = {
            "mode": MODES,
            "search": ("grid", "bisection"),
            "aggregate": ("mean", "quantile"),
            "t_id_rule": ("first", "stays", "monotone"),
            "variance": VARIANCES + ("auto",),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"gaussianity settings: {name}={getattr(self, name)!r}; use one of {allowed}")
        for name in ("eps_dep", "eps_ds", "alpha", "mi_threshold", "grid_step", "dataset_molecules", "workers"):
            if not getattr(self, name) > 0:
                raise ValueError(f"gaussianity settings: {name} must be > 0, got {getattr(self, name)}")
        if set(self.kept_blocks) & set(self.zero_com_blocks):
            raise ValueError(
                f"gaussianity settings: blocks {sorted(set(self.kept_blocks) & set(self.zero_com_blocks))} cannot "
                "both keep their mean and have zero-mean noise; gaga.features=kept needs "
                "backbone.zero_mean_features=false"
            )
        if self.kept_blocks and self.variance_choice != "exact":
            raise ValueError(
                f"gaga.variance={self.variance_choice} describes zero-meaned features only; with gaga.features=kept "
                "use gaga.variance=exact (the features' per-column mean and variance)"
            )
        if not 0 < self.quantile < 1:
            raise ValueError(f"gaussianity settings: quantile must be in (0, 1), got {self.quantile}")
        if not 0 < self.dep_null_quantile <= 1 or self.dep_null_draws < 0:
            raise ValueError(
                "gaussianity settings: dep_null_quantile must be in (0, 1] and dep_null_draws >= 0, got "
                f"{self.dep_null_quantile} and {self.dep_null_draws}"
            )

    @property
    def variance_choice(self) -> str:
        if self.variance != "auto":
            return self.variance
        return "exact" if self.mode == "dataset" else "reference"

    def k_for(self, block: str) -> int:
        return int(self.k_neighbors.get(block, DEFAULT_K))

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists): the callback's cache key and the result's record."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, record: dict) -> GaussianitySettings:
        """Settings from a dict (e.g. a Hydra node); lists become tuples, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"gaussianity settings: unknown keys {unknown}; valid keys are {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in record.items()}
        if "k_neighbors" in values:
            values["k_neighbors"] = dict(values["k_neighbors"])
        return cls(**values)


def _grid(settings: GaussianitySettings, timesteps: int) -> np.ndarray:
    if settings.grid is not None:
        grid = np.unique(np.asarray(settings.grid, dtype=np.int64))
    elif settings.mode == "per_molecule":
        grid = np.array(REFERENCE_GRID)
    else:
        grid = np.unique(np.append(np.arange(0, timesteps + 1, settings.grid_step), timesteps))
    if grid.min() < 0 or grid.max() > timesteps:
        raise ValueError(f"gaussianity settings: grid steps must lie in 0..{timesteps}, got {grid.min()}..{grid.max()}")
    return grid


def _sample_ids(offsets: np.ndarray, min_atoms: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    ids = np.flatnonzero(np.diff(offsets) >= min_atoms)
    if not len(ids):
        raise ValueError(f"no molecule has >= {min_atoms} atoms")
    return np.sort(rng.choice(ids, size, replace=False)) if size is not None and size < len(ids) else ids


def _latest(values) -> int | None:
    values = list(values)
    return None if any(v is None for v in values) else int(max(values))


def _dataset_mode(blocks, offsets, alpha_bar, variance, settings, grid, rng, progress):
    ids = _sample_ids(offsets, 2, settings.dataset_molecules, rng)
    sample = DatasetSample(blocks, offsets, ids, settings.zero_com_blocks, settings.max_column_pairs, rng)
    values: dict[str, dict[int, float]] = {}
    bisection = settings.search == "bisection"

    def statistic(kind: str, block: str):
        def evaluate(t: int) -> float:
            cache = values.setdefault(f"{kind}:{block}", {})
            if t not in cache:
                v_t = marginal_variance(variance, alpha_bar_at(alpha_bar, t))[variance.component(block)]
                alpha_bar_t = block_alpha_bar(alpha_bar, block)[t]
                cache[t] = (
                    sample.ks_distance(block, alpha_bar_t, v_t)
                    if kind == "D"
                    else sample.dependence(block, alpha_bar_t, settings.k_for(block), settings.workers)
                )
                if progress is not None:
                    progress.update(1)
            return cache[t]

        return evaluate

    t_ds = {b: first_below(statistic("D", b), grid, settings.eps_ds, bisection) for b in blocks}
    k = {b: settings.k_for(b) for b in blocks}
    null = dependence_null(
        blocks,
        offsets,
        ids,
        settings.zero_com_blocks,
        settings.max_column_pairs,
        k,
        settings.dep_null_draws,
        settings.seed,
        settings.workers,
    )
    eps_dep = {b: dep_threshold(settings, null[b]) for b in blocks}
    t_id = {b: first_below(statistic("Dep", b), grid, eps_dep[b], bisection, settings.t_id_rule) for b in blocks}
    steps = sorted({t for column in values.values() for t in column})
    curves = {name: [column.get(t) for t in steps] for name, column in values.items()}
    by_block = {b: _latest([t_ds[b], t_id[b]]) for b in blocks}
    summary = {"molecules": len(ids), "dep_null": null, "eps_dep_used": eps_dep}
    return t_ds, t_id, by_block, _latest(by_block.values()), steps, curves, summary


def dep_threshold(settings: GaussianitySettings, null: list[float]) -> float:
    """The Dep threshold T_ID uses: eps_dep, raised to the null's dep_null_quantile (numpy "higher") if above it."""
    if not null:
        return float(settings.eps_dep)
    return float(max(settings.eps_dep, np.quantile(null, settings.dep_null_quantile, method="higher")))


def _aggregate(steps: np.ndarray, aggregate: str, quantile: float) -> float | None:
    """Mean or quantile (numpy "nearest", as the reference) of the steps of molecules that reached Gaussianity."""
    reached = steps[steps != NOT_REACHED]
    if not len(reached):
        return None
    if aggregate == "mean":
        return float(reached.mean())
    return float(np.quantile(reached, quantile, method="nearest"))


def per_molecule_plan(
    blocks, alpha_bar, variance: VarianceEstimate, settings: GaussianitySettings, grid
) -> PerMoleculePlan:
    """The reference procedure's plan for `blocks`: expected v_t per grid step, k, thresholds and the settings' noise
    (zero-mean per molecule in settings.zero_com_blocks; the callback sets these from the model)."""
    expected = {b: marginal_variance(variance, alpha_bar_at(alpha_bar, grid))[variance.component(b)] for b in blocks}
    return PerMoleculePlan(
        grid,
        alpha_bar,
        expected,
        {b: settings.k_for(b) for b in blocks},
        settings.alpha,
        settings.mi_threshold,
        settings.zero_com_blocks,
        np.float32 if settings.single_precision else np.float64,
    )


def _per_molecule_mode(blocks, offsets, alpha_bar, variance, settings, grid, rng, progress):
    ids = _sample_ids(offsets, settings.min_atoms, settings.per_molecule_sample, rng)
    plan = per_molecule_plan(blocks, alpha_bar, variance, settings, grid)
    if progress is not None:
        progress.reset(total=len(ids))
    steps = first_passing_steps(blocks, offsets, ids, plan, settings.seed, settings.workers, progress)
    means = {name: _aggregate(s, "mean", settings.quantile) for name, s in steps.items()}
    quantiles = {name: _aggregate(s, "quantile", settings.quantile) for name, s in steps.items()}
    raw = means if settings.aggregate == "mean" else quantiles
    step = {name: None if v is None else int(round(v)) for name, v in raw.items()}
    curves = {
        f"reached:{name}": [float(np.mean((s != NOT_REACHED) & (s <= t))) for t in grid] for name, s in steps.items()
    }
    summary = {
        "molecules": len(ids),
        "skipped_small": int(np.sum(np.diff(offsets) < settings.min_atoms)),
        "t_mean": means,
        "t_quantile": quantiles,
        "fraction_reached": {name: float(np.mean(s != NOT_REACHED)) for name, s in steps.items()},
    }
    return (
        {b: step[f"{b}/ds"] for b in blocks},
        {b: step[f"{b}/id"] for b in blocks},
        {b: step[f"{b}/star"] for b in blocks},
        step[OVERALL],
        [int(t) for t in grid],
        curves,
        summary,
    )


def find_t_star(
    blocks: dict[str, np.ndarray],
    offsets: np.ndarray,
    alpha_bar: np.ndarray,
    settings: GaussianitySettings | None = None,
    progress: bool = True,
    variance: VarianceEstimate | None = None,
) -> TStarResult:
    """T_ID, T_DS and T* of zero-meaned blocks (see blocks.molecule_blocks) under alpha_bar[t], t = 0..T (or a dict
    block -> alpha_bar[t] for a path whose blocks move at different rates; then the variance must be per block).

    `variance` defaults to the settings' variance choice on these blocks (all molecules, before any subsampling);
    summary["start_v_hat"] holds the sampler's start v_hat per block that goes with it (gaussianity.choice).
    """
    from tqdm.auto import tqdm

    settings = settings or GaussianitySettings()
    start_time = time.perf_counter()
    offsets = np.asarray(offsets, dtype=np.int64)
    alpha_bar = alpha_bar_at(alpha_bar, slice(None))
    validate_blocks(blocks, offsets, settings.zero_com_blocks, source="find_t_star blocks")
    tested = settings.tested_blocks or tuple(blocks)
    missing = sorted(set(tested) - set(blocks))
    if missing:
        raise ValueError(f"gaussianity settings: tested_blocks {missing} are not among the blocks {sorted(blocks)}")
    if variance is None:
        variance, start = choose_variance(
            blocks, offsets, settings.variance_choice, settings.zero_com_blocks, settings.kept_blocks
        )
    else:
        start = {b: variance.start_v_hat(b) for b in blocks}
    blocks = centre_kept_blocks(blocks, variance)  # kept blocks then have mean 0 at every t
    grid = _grid(settings, len(next(iter(alpha_bar.values())) if isinstance(alpha_bar, dict) else alpha_bar) - 1)
    rng = np.random.default_rng(settings.seed)
    run = _dataset_mode if settings.mode == "dataset" else _per_molecule_mode
    tested_blocks = {b: blocks[b] for b in tested}
    unit = "statistic" if settings.mode == "dataset" else "molecule"
    with tqdm(desc=f"T* ({settings.mode})", disable=not progress, unit=unit) as bar:
        t_ds, t_id, by_block, t_star, steps, curves, summary = run(
            tested_blocks, offsets, alpha_bar, variance, settings, grid, rng, bar
        )
    curves = {
        "t": steps,
        **curves,
        **_variance_and_functional_curves(tested_blocks, offsets, alpha_bar, variance, settings, steps, rng),
    }
    summary["run_time_s"] = time.perf_counter() - start_time
    summary["variance_choice"] = settings.variance_choice
    summary["start_v_hat"] = start
    return TStarResult(
        settings.mode, t_star, by_block, t_id, t_ds, variance.to_dict(), settings.to_dict(), curves, summary
    )


def _variance_and_functional_curves(blocks, offsets, alpha_bar, variance, settings, steps, rng) -> dict[str, list]:
    """v_t and H^(K)(x_t) per block at `steps` (H from the atoms of a random sample of molecules)."""
    ids = _sample_ids(offsets, 1, settings.dataset_molecules, rng)
    rows = np.concatenate(list(SizeGroups.from_offsets(offsets, ids).rows.values()), axis=None)
    curves = {}
    for block, values in blocks.items():
        v_t = marginal_variance(variance, alpha_bar_at(alpha_bar, steps))[variance.component(block)]
        v_t = v_t.reshape(len(steps), -1).mean(axis=1)  # a block that keeps its mean: the mean over its columns
        curves[f"v:{block}"] = [float(v) for v in v_t]
        h_t = functional_along_t(
            values[rows],
            block_alpha_bar(alpha_bar, block)[steps],
            settings.functional_order,
            settings.functional_beta,
            settings.functional_weights,
        )
        curves[f"H:{block}"] = [float(h) for h in h_t]
    return curves

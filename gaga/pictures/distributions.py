"""The structure distributions of generated molecules against the reference set the W1 metrics use (the dataset's
test split): bond lengths of the main bond types, bond angles by centre element, atom types, atom counts and
fragments per molecule. Histograms come from the same GeometrySamples arrays as `distribution_distances`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaga.metrics.distributions import distribution_distances
from gaga.metrics.geometry import GeometrySamples

BOND_TYPES = 4  # the most frequent bond types in the reference get a panel each
ANGLE_CENTRES = 3  # ... and the most frequent angle centre elements
BINS = 40
COLUMNS = 4


@dataclass(frozen=True)
class Panel:
    """One histogram: densities of generated and reference samples over shared bin `edges`."""

    title: str
    xlabel: str
    edges: np.ndarray
    generated: np.ndarray
    reference: np.ndarray | None
    categories: tuple[str, ...] = ()  # tick labels of a categorical panel (one bin per category)


def _density(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of all `values` per unit in each bin: values outside the edges count in the total, so a histogram
    with mass out of view shows less area rather than being rescaled."""
    if not len(values):
        return np.zeros(len(edges) - 1)
    return np.histogram(values, bins=edges)[0] / (len(values) * np.diff(edges))


def _continuous_edges(*samples: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """BINS bins from the lowest to the highest 0.5 % / 99.5 % quantile of the samples (or over [low, high])."""
    present = [s for s in samples if len(s)] or [np.zeros(1)]
    low = min(np.quantile(s, 0.005) for s in present) if low is None else low
    high = max(np.quantile(s, 0.995) for s in present) if high is None else high
    return np.linspace(low, max(high, low + 1e-3), BINS + 1)


def _integer_edges(*samples: np.ndarray) -> np.ndarray:
    pooled = np.concatenate([np.asarray(s) for s in samples if len(s)])
    return np.arange(pooled.min(), pooled.max() + 2) - 0.5


def _most_frequent(groups: dict[str, np.ndarray], count: int) -> list[str]:
    return sorted(groups, key=lambda key: -len(groups[key]))[:count]


def distribution_panels(generated: GeometrySamples, reference: GeometrySamples | None = None) -> list[Panel]:
    """The panels of `draw_distributions`, titled with the W1 distance where the metrics report one."""
    w1 = distribution_distances(generated, reference) if reference is not None else {}
    groups = reference if reference is not None else generated
    panels = []

    def add(title: str, key: str | None, xlabel: str, ours, theirs, edges, categories=()):
        if key in w1:
            title = f"{title}   W1 {w1[key]:.3g}"
        reference_density = None if theirs is None else _density(theirs, edges)
        panels.append(Panel(title, xlabel, edges, _density(ours, edges), reference_density, categories))

    empty = np.zeros(0)
    for bond in _most_frequent(groups.bond_lengths, BOND_TYPES):
        ours = generated.bond_lengths.get(bond, empty)
        theirs = None if reference is None else reference.bond_lengths[bond]
        edges = _continuous_edges(ours, empty if theirs is None else theirs)
        add(f"{bond} bond length", f"w1_bond_length.{bond}", "Angstrom", ours, theirs, edges)
    angle_edges = _continuous_edges(low=0.0, high=180.0)
    for centre in _most_frequent(groups.bond_angles, ANGLE_CENTRES):
        ours = generated.bond_angles.get(centre, empty)
        theirs = None if reference is None else reference.bond_angles[centre]
        add(f"angle at {centre}", f"w1_bond_angle.{centre}", "degrees", ours, theirs, angle_edges)
    symbols = generated.encoder.symbols
    type_index = np.arange(len(symbols))
    add(
        "atom types",
        "w1_atom_types",
        "element",
        np.repeat(type_index, generated.type_counts),
        None if reference is None else np.repeat(type_index, reference.type_counts),
        np.arange(len(symbols) + 1) - 0.5,
        tuple(symbols),
    )
    others = [] if reference is None else [reference]
    add(
        "atoms per molecule",
        "w1_num_atoms",
        "atoms",
        generated.num_atoms,
        None if reference is None else reference.num_atoms,
        _integer_edges(*(s.num_atoms for s in [generated, *others])),
    )
    add(
        "fragments per molecule",
        None,
        "fragments",
        generated.fragments,
        None if reference is None else reference.fragments,
        _integer_edges(*(s.fragments for s in [generated, *others])),
    )
    return panels


def draw_distributions(
    generated: GeometrySamples,
    reference: GeometrySamples | None,
    path: str | Path,
    reference_name: str = "reference",
    columns: int = COLUMNS,
) -> Path:
    """Write a PNG of `distribution_panels`: generated as a line, the reference filled grey beneath it (each as
    its share of samples per unit of the axis)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = distribution_panels(generated, reference)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.0 * columns, 2.9 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, panel in zip(grid, panels, strict=False):
        if panel.reference is not None:
            axes.stairs(panel.reference, panel.edges, fill=True, color="#b8b8b8", label=reference_name)
        axes.stairs(panel.generated, panel.edges, color="#d62728", linewidth=1.6, label="generated")
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel(panel.xlabel, fontsize=9)
        axes.tick_params(labelsize=8)
        if panel.categories:
            axes.set_xticks(np.arange(len(panel.categories)), panel.categories)
        elif panel.edges[1] - panel.edges[0] == 1:
            axes.xaxis.get_major_locator().set_params(integer=True)
    for axes in grid[len(panels) :]:
        axes.set_visible(False)
    grid[0].legend(fontsize=8)
    figure.suptitle(
        f"{len(generated.num_atoms)} generated molecules"
        + ("" if reference is None else f" against {len(reference.num_atoms)} of the {reference_name}"),
        fontsize=11,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

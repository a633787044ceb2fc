"""Ball-and-stick renders of molecules in 3D with matplotlib: atoms coloured by element, the bonds the stability
metric found (thicker for double and triple bonds), each view fitted to its molecule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gaga.data.elements import PERIODIC_SYMBOLS
from gaga.data.molecules import MoleculeSet
from gaga.pictures.molecules import DescribedMolecule, describe, label, rdkit_molecule

# CPK-like colours by element symbol; others in OTHER_COLOUR
ELEMENT_COLOURS = {
    "H": "#f2f2f2",
    "B": "#ffb5b5",
    "C": "#505050",
    "N": "#3050f8",
    "O": "#ff0d0d",
    "F": "#90e050",
    "Al": "#bfa6a6",
    "Si": "#f0c8a0",
    "P": "#ff8000",
    "S": "#e0c030",
    "Cl": "#1ff01f",
    "As": "#bd80e3",
    "Br": "#a62929",
    "Hg": "#b8b8d0",
    "I": "#940094",
    "Bi": "#9e4fb5",
}
OTHER_COLOUR = "#ff1493"
CELL_INCHES = 2.6
COLUMNS = 6
MIN_HALF_WIDTH = 1.0  # Angstrom: a single atom still gets a view


def draw_molecule_3d(axes, molecule: DescribedMolecule, title: str | None = None) -> None:
    """Draw one molecule on a 3D matplotlib axes: bonds as grey sticks, atoms as balls, hydrogens smaller."""
    positions = np.asarray(molecule.positions, dtype=np.float64)
    symbols = [PERIODIC_SYMBOLS[z] for z in molecule.atomic_numbers.tolist()]
    for first, second, order in zip(
        molecule.bonds.first.tolist(), molecule.bonds.second.tolist(), molecule.bonds.order.tolist(), strict=True
    ):
        segment = positions[[first, second]]
        axes.plot(*segment.T, color="#7a7a7a", linewidth=1.2 + 1.4 * (order - 1), zorder=1)
    sizes = np.array([40.0 if symbol == "H" else 110.0 for symbol in symbols])
    colours = [ELEMENT_COLOURS.get(symbol, OTHER_COLOUR) for symbol in symbols]
    axes.scatter(*positions.T, s=sizes, c=colours, edgecolors="black", linewidths=0.4, depthshade=True, alpha=1)
    centre = (positions.max(axis=0) + positions.min(axis=0)) / 2
    half = max(MIN_HALF_WIDTH, float((positions.max(axis=0) - positions.min(axis=0)).max()) / 2 + 0.4)
    axes.set_xlim(centre[0] - half, centre[0] + half)
    axes.set_ylim(centre[1] - half, centre[1] + half)
    axes.set_zlim(centre[2] - half, centre[2] + half)
    axes.set_proj_type("ortho")
    axes.set_box_aspect((1, 1, 1), zoom=1.25)
    axes.set_axis_off()
    if title:
        axes.set_title(title, fontsize=8, y=0.0, va="top")


def molecule_figure(rows: int, columns: int, cell_inches: float = CELL_INCHES):
    """A matplotlib Figure on the Agg canvas (no pyplot) sized for rows x columns views."""
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(columns * cell_inches, rows * cell_inches * 1.08), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0, right=1, bottom=0.04, top=1, wspace=0, hspace=0.12)
    return figure


def draw_molecules_3d(
    molecules: MoleculeSet, dataset: str, path: str | Path, count: int = 24, columns: int = COLUMNS
) -> Path:
    """Write a PNG of 3D ball-and-stick views of the first `count` molecules, labelled as in the 2D grid."""
    described = describe(molecules, dataset, count)
    if not described:
        raise ValueError("no molecules to draw")
    columns = min(columns, len(described))
    rows = -(-len(described) // columns)
    figure = molecule_figure(rows, columns)
    for index, molecule in enumerate(described):
        axes = figure.add_subplot(rows, columns, index + 1, projection="3d")
        draw_molecule_3d(axes, molecule, label(molecule, rdkit_molecule(molecule, dataset)[1]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

"""A grid of RDKit 2D depictions of generated molecules, built from their 3D bonds, each labelled with its SMILES
(or "invalid"), atom count and stability. Fragments are drawn as they are."""

from __future__ import annotations

from pathlib import Path

from gaga.data.molecules import MoleculeSet
from gaga.pictures.molecules import describe, label, rdkit_molecule

CELL_PIXELS = (260, 260)
COLUMNS = 6
LABEL_PIXELS = 44  # the two label lines under each drawing
LABEL_POINTS = 14


def depiction(molecule):
    """A copy of an RDKit molecule with 2D coordinates, its hydrogen atoms folded into their heavy atom's label
    (bridging or lone ones kept) and no hydrogens added: an atom shows the hydrogens it was generated with."""
    from rdkit import Chem
    from rdkit.Chem import rdDepictor

    from gaga.metrics.rdkit_molecules import quiet_rdkit

    drawn = Chem.Mol(molecule)
    for atom in drawn.GetAtoms():
        atom.SetNoImplicit(True)
    drawn.UpdatePropertyCache(strict=False)
    keep_hydrogen_molecules = Chem.RemoveHsParameters()
    keep_hydrogen_molecules.removeOnlyHNeighbors = False  # H2 stays two atoms
    with quiet_rdkit():
        drawn = Chem.RemoveHs(drawn, keep_hydrogen_molecules, sanitize=False)
    Chem.FastFindRings(drawn)
    drawn.RemoveAllConformers()
    rdDepictor.Compute2DCoords(drawn)
    return drawn


def draw_grid(
    molecules: MoleculeSet,
    dataset: str,
    path: str | Path,
    count: int = 24,
    columns: int = COLUMNS,
    cell: tuple[int, int] = CELL_PIXELS,
) -> Path:
    """Write a PNG grid of the first `count` molecules (`columns` per row, `cell` pixels each, the label under the
    drawing); return its path."""
    from PIL import Image, ImageDraw, ImageFont

    described = describe(molecules, dataset, count)
    if not described:
        raise ValueError("no molecules to draw")
    columns = min(columns, len(described))
    rows = -(-len(described) // columns)
    width, height = cell
    font = ImageFont.load_default(size=LABEL_POINTS)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    pen = ImageDraw.Draw(sheet)
    for index, molecule in enumerate(described):
        built, smiles = rdkit_molecule(molecule, dataset)
        left, top = index % columns * width, index // columns * height
        sheet.paste(_drawing(depiction(built), width, height - LABEL_PIXELS), (left, top))
        pen.multiline_text(
            (left + width // 2, top + height - LABEL_PIXELS // 2),
            label(molecule, smiles),
            fill="black",
            font=font,
            anchor="mm",
            align="center",
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _drawing(molecule, width: int, height: int):
    """RDKit's drawing of a depicted molecule as a Pillow image."""
    import io

    from PIL import Image
    from rdkit.Chem.Draw import rdMolDraw2D

    drawer = rdMolDraw2D.MolDraw2DCairo(width, height)
    drawer.drawOptions().prepareMolsBeforeDrawing = False
    drawer.DrawMolecule(molecule)
    drawer.FinishDrawing()
    return Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB")

"""Write the pictures of a set of generated molecules into a folder; a picture that fails to draw is one warning,
never an error, so sampling's own outputs (SDF, XYZ, metrics) do not depend on drawing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gaga.data.molecules import MoleculeSet
from gaga.metrics.geometry import GeometrySamples

log = logging.getLogger("gaga")


def write_pictures(
    folder: str | Path,
    molecules: MoleculeSet,
    dataset: str,
    count: int = 24,
    chain: list | None = None,
    geometry: GeometrySamples | None = None,
    reference: GeometrySamples | None = None,
    reference_name: str = "reference",
) -> dict[str, Path]:
    """Draw into `folder`, returning {file name: path} of what was written:

    - molecules.png, molecules_3d.png: the first `count` molecules (2D grid, 3D ball-and-stick), if count > 0;
    - chain.png, chain.gif: the denoising chain (gaga.sampling.ChainFrame list, start first), if given;
    - distributions.png: `geometry` (the molecules' GeometrySamples) against `reference`, if geometry is given.
    """
    from gaga.pictures.chain import draw_chain_strip, write_chain_gif
    from gaga.pictures.distributions import draw_distributions
    from gaga.pictures.grid import draw_grid
    from gaga.pictures.render3d import draw_molecules_3d

    folder = Path(folder)
    jobs: dict[str, Callable[[Path], Path]] = {}
    if count > 0:
        jobs["molecules.png"] = lambda path: draw_grid(molecules, dataset, path, count)
        jobs["molecules_3d.png"] = lambda path: draw_molecules_3d(molecules, dataset, path, count)
    if chain:
        jobs["chain.png"] = lambda path: draw_chain_strip(chain, dataset, path)
        jobs["chain.gif"] = lambda path: write_chain_gif(chain, dataset, path)
    if geometry is not None:
        jobs["distributions.png"] = lambda path: draw_distributions(geometry, reference, path, reference_name)
    written = {}
    for name, draw in jobs.items():
        try:
            written[name] = draw(folder / name)
        except Exception as error:  # a picture is never worth losing the samples for
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            log.warning("%s not drawn (%s: %s); the other outputs are unaffected", name, type(error).__name__, message)
    return written

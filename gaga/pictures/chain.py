"""Denoising chains as pictures: a strip (one row per molecule, one column per kept step) and an animated GIF
(all chains side by side, one frame per kept step, the final molecules held longest). The first frame is the
start state (GAGA: the start Gaussian at T*), the last the sampler's final molecules."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gaga.pictures.molecules import describe
from gaga.pictures.render3d import draw_molecule_3d, molecule_figure

FRAME_SECONDS = 0.6
FINAL_SECONDS = 2.5
GIF_CELL_INCHES = 2.4


def draw_chain_strip(frames, dataset: str, path: str | Path, cell_inches: float = 1.9) -> Path:
    """Write a PNG of `frames` (gaga.sampling.ChainFrame, start first): molecule i's chain in row i, left to
    right; each column titled with its step."""
    if len(frames) < 2:
        raise ValueError(f"a chain strip needs at least 2 frames, got {len(frames)}")
    rows, columns = len(frames[0].molecules), len(frames)
    figure = molecule_figure(rows, columns, cell_inches)
    figure.subplots_adjust(top=1 - 0.35 / (rows * cell_inches), bottom=0)
    for column, frame in enumerate(frames):
        for row, molecule in enumerate(describe(frame.molecules, dataset)):
            axes = figure.add_subplot(rows, columns, row * columns + column + 1, projection="3d")
            draw_molecule_3d(axes, molecule)
            if row == 0:
                axes.set_title(frame.label.replace(": ", ":\n"), fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def write_chain_gif(frames, dataset: str, path: str | Path, cell_inches: float = GIF_CELL_INCHES) -> Path:
    """Write an animated GIF of `frames`: all chains side by side, the step in the title, looping."""
    from PIL import Image

    if len(frames) < 2:
        raise ValueError(f"a chain animation needs at least 2 frames, got {len(frames)}")
    images = [Image.fromarray(_render(frame, dataset, cell_inches)).convert("RGB") for frame in frames]
    durations = [int(1000 * FRAME_SECONDS)] * (len(images) - 1) + [int(1000 * FINAL_SECONDS)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def _render(frame, dataset: str, cell_inches: float) -> np.ndarray:
    """One frame of the animation as an RGBA array."""
    described = describe(frame.molecules, dataset)
    figure = molecule_figure(1, len(described), cell_inches)
    figure.subplots_adjust(top=0.86)
    figure.suptitle(frame.label, fontsize=11)
    for index, molecule in enumerate(described):
        draw_molecule_3d(figure.add_subplot(1, len(described), index + 1, projection="3d"), molecule)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())

"""Tiny generated images of shapes (Pillow), for training tests and the training benchmark.

Position, size, colour and background vary per image, so a model has to learn the shape,
not a pixel or a colour; the same (seed, index) always draws the same image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One shape, filled with a random colour, on a random grey background."""
    grey = int(rng.integers(0, 120))
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    pen = ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    colour = tuple(int(c) for c in rng.integers(140, 256, 3))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        corners = [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)]
        pen.polygon(corners, fill=colour)
    return image


def write_shapes(
    root: Path, n: int, shapes: tuple[str, ...] = SHAPES[:2], size: int = 32, seed: int = 0
) -> pl.DataFrame:
    """`n` images cycling through `shapes`, written as root/<shape>/<i>.png.

    Returns a task frame: `image` (absolute path), `label`, `text`.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        shape = shapes[i % len(shapes)]
        path = root / shape / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_shape(shape, size, rng).save(path)
        rows.append({"image": str(path.resolve()), "label": shape, "text": str(path.resolve())})
    return pl.DataFrame(rows)

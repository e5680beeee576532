"""8x8 digit images as greyscale PNG files, and folders of them written atomically.

Values 0..16 (ink pixels per 4x4 block) are stored as round(v * 255 / 16) so the files look
like ordinary greyscale images to any image embedder, and `round(p * 16 / 255)` gives the
value back exactly (the rounding error, at most 0.5 grey levels, is 0.03 of a count).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from synque import SynqueError
from synque.data.digits_render import MAX_VALUE, SIDE


def to_grey(values: np.ndarray) -> np.ndarray:
    """Counts 0..16 -> grey levels 0..255, rounding halves up (8 -> 127.5 -> 128)."""
    if values.min(initial=0) < 0 or values.max(initial=0) > MAX_VALUE:
        raise SynqueError(f"digit image values must lie in 0..{MAX_VALUE}")
    return np.floor(values.astype(np.float64) * 255 / MAX_VALUE + 0.5).astype(np.uint8)


def from_grey(grey: np.ndarray) -> np.ndarray:
    """Grey levels 0..255 -> counts 0..16 (the inverse of `to_grey` on its outputs)."""
    return np.floor(grey.astype(np.float64) * MAX_VALUE / 255 + 0.5).astype(np.uint8)


def write_digit_png(path: Path, values: np.ndarray) -> None:
    """One 8x8 array of counts as an 8x8 greyscale ("L") PNG."""
    if values.shape != (SIDE, SIDE):
        raise SynqueError(f"{path}: a digit image is {SIDE}x{SIDE}, got shape {values.shape}")
    Image.fromarray(to_grey(values), mode="L").save(path, format="PNG")


def read_digit_png(path: Path) -> np.ndarray:
    """An 8x8 greyscale PNG back as counts 0..16; anything else is a one-line error."""
    try:
        with Image.open(path) as image:
            image.load()
            mode, size, grey = image.mode, image.size, np.asarray(image)
    except (OSError, ValueError) as exc:
        raise SynqueError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    if mode != "L" or size != (SIDE, SIDE):
        raise SynqueError(f"{path}: expected an {SIDE}x{SIDE} greyscale PNG, got {mode} {size}")
    return from_grey(grey)


def read_labeled_folder(folder: Path) -> tuple[np.ndarray, list[str]]:
    """An ImageFolder tree (`folder/<class>/*.png`) as (n, 8, 8) counts and class names."""
    if not folder.is_dir():
        raise SynqueError(f"{folder}: image folder not found")
    images, labels = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.png")):
            images.append(read_digit_png(path))
            labels.append(class_dir.name)
    if not images:
        raise SynqueError(f"{folder}: no <class>/*.png images")
    return np.stack(images), labels


def _file_name(index: int, count: int) -> str:
    """Zero-padded so that a name sort is the write order."""
    return f"{index:0{max(4, len(str(count - 1)))}d}.png"


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to fill; on success it *becomes* `target`.

    A killed writer leaves only a hidden `.<name>.tmp-*` folder, never a half `target`, so
    "target exists" means "target is complete". An existing target is replaced.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield temp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_image_set(folder: Path, items: Sequence[tuple[np.ndarray, str]]) -> Path:
    """Labeled images as `folder/<class>/<i>.png` (ImageFolder layout), atomically.

    `i` is the item's position in `items`, so the files keep the generator's order.
    """
    folder = Path(folder)
    with atomic_folder(folder) as temp:
        for index, (values, label) in enumerate(items):
            (temp / str(label)).mkdir(exist_ok=True)
            write_digit_png(temp / str(label) / _file_name(index, len(items)), values)
    return folder


def write_unlabeled_set(folder: Path, images: np.ndarray) -> Path:
    """Images as a flat `folder/<i>.png` (an unlabeled pool: names carry no label), atomically."""
    folder = Path(folder)
    with atomic_folder(folder) as temp:
        for index, values in enumerate(images):
            write_digit_png(temp / _file_name(index, len(images)), values)
    return folder

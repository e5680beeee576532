"""Image fakes: small images written where a task expects them, image task folders.

Each class gets its own colour and stripe direction, so a classifier can learn them and
embeddings of one class sit together; noise varies with the image's index.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(220, 40, 40), (40, 180, 60), (40, 60, 220), (200, 200, 40), (160, 40, 200)]


def draw(label_index: int, index: int, size: int = 16, mode: str = "RGB") -> Image.Image:
    """One image of a class: colour and stripes by class, seeded noise by index."""
    rng = np.random.default_rng(1000 * label_index + index)
    base = np.array(COLOURS[label_index % len(COLOURS)], dtype=float)
    pixels = np.tile(base, (size, size, 1)) * rng.uniform(0.6, 1.0)
    stripes = np.arange(size) % 4 < 2
    mask = stripes[None, :] if label_index % 2 else stripes[:, None]
    pixels = pixels * np.where(mask, 1.0, 0.4)[..., None]
    pixels += rng.normal(0, 12, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image.convert(mode) if mode != "RGB" else image


def write_images(paths: Iterable[str], labels: Iterable[str | None], size: int = 16) -> int:
    """Write an image at every path (class taken from its label); returns how many."""
    classes: dict[str, int] = {}
    count = 0
    for i, (path, label) in enumerate(zip(paths, labels, strict=True)):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        index = classes.setdefault(str(label), len(classes))
        image = draw(index, i, size)
        if target.suffix.lower() in (".jpg", ".jpeg"):
            image.save(target, quality=90)
        else:
            image.save(target)
        count += 1
    return count


def make_image_folder(
    root: Path, layout: str = "classes", n_sets: int = 4, n: int = 24, n_real: int = 20
) -> Path:
    """An image task folder: candidate sets of graded quality, real sample, labeled test set.

    `layout="classes"` writes `synthetic/<set>/<class>/*.png`; `"manifest"` writes the images
    flat with a `manifest.jsonl` (`image` relative to it, `label`). Set k has k of every
    4 labels wrong, so its trained accuracy falls with k.
    """
    classes = ["cat", "dog", "owl"]
    for s in range(n_sets):
        folder = root / "synthetic" / f"set{s}"
        folder.mkdir(parents=True)
        rows = []
        for i in range(n):
            true = i % len(classes)
            label = classes[(true + 1) % len(classes)] if i % 4 < s else classes[true]
            image = draw(true, 100 * s + i, mode="L" if i % 5 == 0 else "RGB")
            name = f"{i}.png"
            if layout == "classes":
                (folder / label).mkdir(exist_ok=True)
                image.save(folder / label / name)
            else:
                image.save(folder / name)
                rows.append({"image": name, "label": label})
        if layout == "manifest":
            (folder / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (root / "real" / "sample").mkdir(parents=True)
    for i in range(n_real):
        draw(i % len(classes), 5000 + i).save(root / "real" / "sample" / f"r{i}.png")
    for i in range(3 * len(classes)):
        folder = root / "real" / "test" / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        draw(i % len(classes), 9000 + i).save(folder / f"t{i}.png")
    return root

"""Image examples: image sets on disk (class folders, flat folders, manifests) and their checks.

An image example is a file path with an optional label. Its identity is the sha256 of its
bytes (embedders and judges key their caches on it), so a moved file is the same example and
an edited one is not. Pixels are only read when a stage needs them: listing a set never opens
an image, and `check_images` reads each file once to fail early, naming the first bad one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, UnidentifiedImageError

from synque import SynqueError
from synque.data.io import SUFFIXES, read_table

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
#: Background that transparent pixels are laid on: what a person looking at the file sees.
BACKGROUND = (255, 255, 255)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _manifest_in(folder: Path) -> Path | None:
    """The single data file of a folder that holds a manifest instead of images."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    if len(files) > 1:
        names = ", ".join(sorted(p.name for p in files))
        raise SynqueError(f"{folder}: several manifest files ({names}); keep one")
    return files[0] if files else None


def read_manifest(path: Path) -> pl.DataFrame:
    """`image` (resolved against the manifest's folder) and optional `label` columns."""
    table = read_table(path)
    if "image" not in table.columns:
        found = ", ".join(table.columns) or "none"
        raise SynqueError(f"{path}: a manifest needs an 'image' column (columns: {found})")
    base = path.parent
    images = [str((base / str(p)).resolve()) if p is not None else "" for p in table["image"]]
    frame = pl.DataFrame({"image": images})
    if "label" in table.columns:
        frame = frame.with_columns(label=table["label"].cast(pl.String))
    return frame


def list_image_set(path: Path) -> pl.DataFrame:
    """An image set: a folder of class sub-folders (labels), a flat folder, or a manifest.

    Columns: `image` (absolute path) and, when the layout gives labels, `label`.
    """
    if path.is_file():
        return read_manifest(path)
    if not path.is_dir():
        raise SynqueError(f"{path}: image set not found")
    manifest = _manifest_in(path)
    if manifest is not None:
        return read_manifest(manifest)
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:
        rows = [
            (str(p.resolve()), d.name) for d in classes for p in sorted(d.iterdir()) if is_image(p)
        ]
        return pl.DataFrame(rows, schema=["image", "label"], orient="row")
    images = [str(p.resolve()) for p in sorted(path.iterdir()) if is_image(p)]
    return pl.DataFrame({"image": images}, schema={"image": pl.String})


def remap(paths: Iterable[str], prefix: str, root: str | None) -> list[str]:
    """Replace a path prefix recorded elsewhere (e.g. `<ROOT_DATA_PATH>`) by a local root."""
    if root is None:
        return list(paths)
    new = str(Path(str(root)).expanduser())
    return [new + p[len(prefix) :] if p.startswith(prefix) else p for p in paths]


def _problem(path: str) -> str | None:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "missing file"
    except OSError as exc:
        return f"unreadable file ({exc.strerror or type(exc).__name__})"
    try:
        with Image.open(BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "not a readable image"
    return None


class ImageChecker:
    """Checks image files once per process (the same file is not read twice by one task)."""

    def __init__(self) -> None:
        self._ok: set[str] = set()

    def check(self, paths: Iterable[str], source: str | Path) -> None:
        """Raise one line naming the first bad image of `source` and how many are bad."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._ok]
        bad: list[tuple[str, str]] = []
        for path in todo:
            problem = _problem(path)
            if problem is None:
                self._ok.add(path)
            else:
                bad.append((path, problem))
        if bad:
            first, why = bad[0]
            total = len(list(dict.fromkeys(paths)))
            raise SynqueError(f"{first}: {why} ({len(bad)} of {total} images of {source} are bad)")


def image_key(path: str | Path) -> str:
    """sha256 of the file's bytes: the cache key of an image, independent of where it lies."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise SynqueError(f"image {path}: cannot read the file ({exc.strerror or exc})") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey images scaled to 8 bits (Pillow would clip them at 255)."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if values.size and values.max() <= 1.0 else 255.0
    else:  # I;16* and I: integer grey, 16-bit in every common format (PNG, TIFF)
        top = 65535.0 if values.size and values.max() > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8), "L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB; transparency is laid over a white background.

    Why composite instead of `convert("RGB")`: that would drop alpha and show whatever colour
    the fully transparent pixels happen to store (often black), not what the image looks like.
    """
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """The image at `path` as 8-bit RGB; one-line `SynqueError` naming the file when unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynqueError(f"image {path}: cannot be read as an image ({cause[:160]})") from None


def resize_square(img: Image.Image, size: int, resample: str) -> np.ndarray:
    """`img` stretched to size x size (no crop: nothing of the image is lost), uint8 HxWxC."""
    if img.size != (size, size):
        img = img.resize((size, size), RESAMPLE[resample])
    return np.asarray(img, dtype=np.uint8)

"""The offline `digits` image task: scikit-learn's 8x8 digits and synthetic candidates.

A whole image SynQuE study with no download: the real data is `sklearn.datasets.load_digits`
(1,797 images, values 0..16), split once (seeded, stratified) into three disjoint parts, and
the candidates are generated locally (`synque.data.digits_candidates`). Layout under `root`:

    real/sample/<i>.png           the unlabeled real pool (stages draw a per-seed sample)
    real/test/<class>/<i>.png     the labeled real test set (ImageFolder)
    generator_fit/<class>/<i>.png the only real images a generator may fit on
    synthetic/<name>/<class>/<i>.png  one folder per candidate set
    digits.json                   how each part was made (written last: the "complete" mark)

Every folder appears whole or not at all (`atomic_folder`), and `digits.json` lists only
finished parts, so a killed run is finished by the next call and a finished one is left as
it is. Asking a prepared folder for another split or candidate recipe is an error rather
than a silent overwrite: runs logged against the old files would no longer match them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from synque import SynqueError
from synque.data.digits_candidates import (
    CLASSES,
    DIGITS_STRATEGIES,
    generate_digits_set,
    resolve_strategy,
    zipf_counts,
)
from synque.data.digits_io import (
    read_digit_png,
    read_labeled_folder,
    write_image_set,
    write_unlabeled_set,
)

__all__ = [
    "DIGITS_STRATEGIES",
    "generate_digits_set",
    "load_real_digits",
    "prepare_digits_task",
    "read_digit_png",
    "read_labeled_folder",
    "write_digits_candidates",
    "write_image_set",
    "zipf_counts",
]

MANIFEST = "digits.json"
SOURCE = "sklearn.datasets.load_digits"
_REAL_PARTS = ("real/sample", "real/test", "generator_fit")


def load_real_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797, 8, 8) uint8 counts 0..16 and int labels 0..9."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    return digits.images.astype(np.uint8), digits.target.astype(np.int64)


def split_digits(
    labels: np.ndarray, *, seed: int, n_test: int, n_generator: int
) -> dict[str, np.ndarray]:
    """Indices of the three disjoint parts, each stratified by class (seeded)."""
    from sklearn.model_selection import train_test_split

    total = len(labels)
    if n_test < len(CLASSES) or n_generator < 2 * len(CLASSES):
        raise SynqueError(
            f"digits task: n_test must be >= {len(CLASSES)} and n_generator >= "
            f"{2 * len(CLASSES)} (one test image and two fit images per class), "
            f"got n_test={n_test} n_generator={n_generator}"
        )
    if n_test + n_generator > total - len(CLASSES):
        raise SynqueError(
            f"digits task: n_test + n_generator = {n_test + n_generator} leaves too few of "
            f"the {total} images for real/sample"
        )
    index = np.arange(total)
    rest, test = train_test_split(index, test_size=n_test, stratify=labels, random_state=seed)
    sample, fit = train_test_split(
        rest, test_size=n_generator, stratify=labels[rest], random_state=seed
    )
    return {"real/sample": sample, "real/test": test, "generator_fit": fit}


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise SynqueError(f"{path}: malformed JSON (delete it to prepare again)") from None


def _write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Through a temporary file and a rename, so the mark is never half written."""
    fd, temp = tempfile.mkstemp(dir=root, prefix=f".{MANIFEST}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
    os.replace(temp, root / MANIFEST)


def _lock(root: Path) -> FileLock:
    """One writer per task folder: parallel sweeps (joblib, SLURM) may all call prepare."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / ".digits.lock"), timeout=600)


def _mismatch(root: Path, what: str, recorded: Any, asked: Any) -> SynqueError:
    return SynqueError(
        f"{root / MANIFEST}: {what} was prepared with {recorded}, asked for {asked} "
        f"(use another folder, or delete it to start again)"
    )


def prepare_digits_task(
    root: Path, *, seed: int = 0, n_test: int = 600, n_generator: int = 400
) -> Path:
    """Write the real parts of the digits task under `root` (once) and return `root`.

    Images are 8x8 greyscale PNGs, value v -> round(v * 255 / 16). The real pool gets the
    1,797 - n_test - n_generator images left over (797 by default).
    """
    root = Path(root).expanduser().resolve()
    split = {"source": SOURCE, "seed": seed, "n_test": n_test, "n_generator": n_generator}
    with _lock(root):
        manifest = _read_manifest(root)
        missing = [part for part in _REAL_PARTS if not (root / part).is_dir()]
        if "real" in manifest:
            recorded = {k: manifest["real"].get(k) for k in split}
            if recorded != split:
                raise _mismatch(root, "the real split", recorded, split)
            if not missing:
                return root
        else:  # parts without the mark are leftovers of a killed run, of unknown split
            missing = list(_REAL_PARTS)
        images, labels = load_real_digits()
        parts = split_digits(labels, seed=seed, n_test=n_test, n_generator=n_generator)
        for part in missing:
            if part == "real/sample":
                write_unlabeled_set(root / part, images[parts[part]])
            else:
                write_image_set(root / part, [(images[i], CLASSES[labels[i]]) for i in parts[part]])
        counts = {part: len(index) for part, index in parts.items()}
        _write_manifest(root, {**manifest, "real": {**split, "counts": counts}})
    return root


def write_digits_candidates(
    root: Path,
    *,
    seed: int = 0,
    n: int = 1000,
    strategies: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Generate each strategy into `root/synthetic/<name>/` (once); name -> folder.

    `strategies` maps names to option overrides (default: `DIGITS_STRATEGIES`, as they
    are). Fitted strategies fit on `root/generator_fit`, so `prepare_digits_task` comes first.
    """
    root = Path(root).expanduser().resolve()
    chosen = {name: {} for name in DIGITS_STRATEGIES} if strategies is None else strategies
    folders: dict[str, Path] = {}
    with _lock(root):
        if "real" not in _read_manifest(root):
            raise SynqueError(f"{root}: not a prepared digits task (run prepare_digits_task)")
        for name, overrides in chosen.items():
            recipe = {"seed": seed, "n": n, "options": resolve_strategy(name, dict(overrides))}
            recipe = json.loads(json.dumps(recipe))  # tuples as lists, as they are stored
            folder = folders[name] = root / "synthetic" / name
            done = _read_manifest(root).get("candidates", {})
            if name in done and folder.is_dir():
                if done[name] != recipe:
                    raise _mismatch(root, f"candidate '{name}'", done[name], recipe)
                continue
            items = generate_digits_set(
                name, n=n, seed=seed, fit_root=root / "generator_fit", **overrides
            )
            write_image_set(folder, items)
            manifest = _read_manifest(root)
            manifest["candidates"] = {**manifest.get("candidates", {}), name: recipe}
            _write_manifest(root, manifest)
    return folders

"""Labeled synthetic digit sets of graded realism: the candidates of the offline image study.

A strategy is a name plus options; `kind` says how the images are made:

- `font`: DejaVu glyphs rendered like optdigits (`synque.data.digits_render`), with
  augmentation from none to heavy, optionally degraded (noise, blur) or moved off centre;
- `pca_gaussian`: a per-class Gaussian in the PCA space of `generator_fit` (the only real
  images a generator may see), so it is the most realistic family; fewer components make
  smoother, less realistic digits.

Two options apply to any kind and change only the labels a label-free proxy cannot judge:
`label_noise` (that fraction of labels moved to another class; the images are exactly those
of the same strategy without it) and `zipf` (class sizes proportional to 1/rank**zipf, the
ranks a seeded permutation of the classes).

Each set draws from three independent streams of `SeedSequence(seed)` (labels, images,
label noise), so a set is a pure function of (options, n, seed, generator_fit).
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from synque import SynqueError
from synque.data.digits_io import read_labeled_folder
from synque.data.digits_render import MAX_VALUE, SIDE, Augment, available_faces, degrade
from synque.data.digits_render import render_digits as _render

CLASSES = tuple(str(d) for d in range(10))

_LIGHT = {
    "stroke": (0.0, 1.5),
    "rotation_deg": 6.0,
    "shear": 0.15,
    "scale_jitter": 0.05,
    "shift": 1.0,
}
_HEAVY = {
    "stroke": (0.0, 2.0),
    "rotation_deg": 12.0,
    "shear": 0.3,
    "scale_jitter": 0.1,
    "aspect_jitter": 0.25,
    "shift": 1.5,
    "elastic_alpha": 2.5,
}
_PCA = {"kind": "pca_gaussian", "components": 16}

#: The default candidate family, roughly from most to least realistic (see
#: bench/bench_digits_truth.py for the accuracy each gives on the real test set).
DIGITS_STRATEGIES: dict[str, dict[str, Any]] = {
    "pca_gaussian": {**_PCA},
    "zipf_imbalance": {**_PCA, "zipf": 2.0},
    "label_noise_40": {**_PCA, "label_noise": 0.4},
    "pca_gaussian_coarse": {**_PCA, "components": 3},
    "font_aug_heavy": {"kind": "font", **_HEAVY},
    "font_aug_light": {"kind": "font", **_LIGHT},
    "font_clean": {"kind": "font", "faces": ["DejaVuSans"], "stroke": (0.0, 1.0)},
    "font_noisy_blur": {"kind": "font", **_LIGHT, "noise": 4.5, "blur": 1.2},
    "font_offcentre": {"kind": "font", **_LIGHT, "height": 0.6, "offcentre": 6.0},
}

_COMMON = {"kind", "label_noise", "zipf"}
_KIND_OPTIONS = {
    "font": {f.name for f in fields(Augment)} | {"faces", "noise", "blur"},
    "pca_gaussian": {"components", "variance_scale"},
}


def resolve_strategy(strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    """The strategy's default options overridden by `options`, checked by name."""
    if strategy not in DIGITS_STRATEGIES and "kind" not in options:
        close = difflib.get_close_matches(strategy, DIGITS_STRATEGIES, 1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (or pass kind=font|pca_gaussian)"
        raise SynqueError(f"digits strategy '{strategy}': unknown{hint}")
    merged = {**DIGITS_STRATEGIES.get(strategy, {}), **options}
    kind = merged.get("kind")
    if kind not in _KIND_OPTIONS:
        raise SynqueError(f"digits strategy '{strategy}': kind '{kind}' is not font|pca_gaussian")
    allowed = _COMMON | _KIND_OPTIONS[kind]
    for key in merged:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, 1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SynqueError(f"digits strategy '{strategy}': unknown option '{key}'{hint}")
    if not 0.0 <= float(merged.get("label_noise", 0.0)) <= 1.0:
        raise SynqueError(f"digits strategy '{strategy}': label_noise must lie in 0..1")
    return merged


def zipf_counts(n: int, classes: int, exponent: float) -> np.ndarray:
    """Class sizes proportional to 1/rank**exponent summing to n (largest remainders)."""
    weights = 1.0 / np.arange(1, classes + 1) ** exponent
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    leftover = n - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:leftover]] += 1
    return counts


def _labels(n: int, options: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Class indices of the set, shuffled: balanced (n % 10 classes get one more) or Zipf."""
    if "zipf" in options:
        counts = np.zeros(len(CLASSES), dtype=int)
        counts[rng.permutation(len(CLASSES))] = zipf_counts(n, len(CLASSES), options["zipf"])
        labels = np.repeat(np.arange(len(CLASSES)), counts)
    else:
        labels = np.arange(n) % len(CLASSES)
    return rng.permutation(labels)


def _flip_labels(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(fraction * n) labels moved to a uniformly chosen *other* class."""
    flipped = labels.copy()
    count = int(np.floor(fraction * len(labels) + 0.5))
    chosen = rng.choice(len(labels), count, replace=False)
    flipped[chosen] = (labels[chosen] + rng.integers(1, len(CLASSES), count)) % len(CLASSES)
    return flipped


def _font_images(labels: np.ndarray, options: dict[str, Any], rng: np.random.Generator):
    faces = list(options.get("faces") or available_faces())
    geometry = {k: v for k, v in options.items() if k in _KIND_OPTIONS["font"] - {"faces"}}
    noise, blur = geometry.pop("noise", 0.0), geometry.pop("blur", 0.0)
    if "stroke" in geometry:
        geometry["stroke"] = tuple(geometry["stroke"])
    images = _render(labels, faces, Augment(**geometry), rng)
    return degrade(images, rng, noise=noise, blur=blur) if noise or blur else images


def _pca_images(
    labels: np.ndarray, options: dict[str, Any], rng: np.random.Generator, fit_root: Path
) -> np.ndarray:
    """Per-class Gaussian in the PCA space of `fit_root` (and nothing else), clipped to 0..16."""
    from sklearn.decomposition import PCA  # seconds to import: only when a set needs it

    real, names = read_labeled_folder(fit_root)
    unknown = sorted(set(names) - set(CLASSES))
    if unknown:
        raise SynqueError(f"{fit_root}: class folders must be 0..9, found '{unknown[0]}'")
    pixels = real.reshape(len(real), -1).astype(np.float64)
    classes = np.array([CLASSES.index(c) for c in names])
    components = int(options.get("components", 16))
    if not 1 <= components <= min(pixels.shape):
        raise SynqueError(f"pca_gaussian: components must lie in 1..{min(pixels.shape)}")
    pca = PCA(components, svd_solver="full").fit(pixels)
    codes = pca.transform(pixels)
    out = np.empty((len(labels), SIDE * SIDE))
    for label in range(len(CLASSES)):
        wanted = np.flatnonzero(labels == label)
        mine = codes[classes == label]
        if len(wanted) == 0:
            continue
        if len(mine) < 2:
            raise SynqueError(f"{fit_root}/{CLASSES[label]}: needs 2+ images to fit a Gaussian")
        cov = np.atleast_2d(np.cov(mine, rowvar=False)) * float(options.get("variance_scale", 1))
        # A small ridge keeps the Cholesky factor defined when a class has few images.
        factor = np.linalg.cholesky(cov + 1e-3 * np.eye(components))
        draws = mine.mean(0) + rng.standard_normal((len(wanted), components)) @ factor.T
        out[wanted] = pca.inverse_transform(draws)
    return np.clip(np.rint(out), 0, MAX_VALUE).astype(np.uint8).reshape(-1, SIDE, SIDE)


def generate_digits_set(
    strategy: str, *, n: int = 1000, seed: int, fit_root: Path | None = None, **options: Any
) -> list[tuple[np.ndarray, str]]:
    """`n` labeled 8x8 images (uint8 counts 0..16, label '0'..'9') of one strategy.

    `strategy` names an entry of `DIGITS_STRATEGIES` (whose options `options` override) or,
    with `kind=...`, a new one. `fit_root` (an ImageFolder of real images, the task's
    `generator_fit/`) is read only by fitted kinds (`pca_gaussian`).
    """
    opts = resolve_strategy(strategy, options)
    if n < 1:
        raise SynqueError(f"digits strategy '{strategy}': n must be positive, got {n}")
    label_rng, image_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    labels = _labels(n, opts, label_rng)
    if opts["kind"] == "pca_gaussian":
        if fit_root is None:
            raise SynqueError(f"digits strategy '{strategy}': pca_gaussian needs fit_root")
        images = _pca_images(labels, opts, image_rng, Path(fit_root))
    else:
        images = _font_images(labels, opts, image_rng)
    if opts.get("label_noise"):
        labels = _flip_labels(labels, float(opts["label_noise"]), noise_rng)
    return [(image, CLASSES[label]) for image, label in zip(images, labels, strict=True)]

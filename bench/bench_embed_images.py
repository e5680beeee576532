"""Benchmark: image embedders in float32 and bfloat16 on the same images, side by side.

Writes N scikit-learn digits (8 x 8 grey, scaled to 0..255) as PNG files, plus candidate sets
made from them (a clean draw, Gaussian pixel noise of three strengths, blur, only digits 0-4).
For every embedder and dtype, on a fresh cache, it measures:

- images/s embedding the N clean digits (reading, hashing, resizing, the model, the cache);
- feature quality on the clean digits: 5-fold accuracy of logistic regression and 1-NN;
- for bfloat16: the largest relative deviation of an embedding from its float32 value, and
  whether the proxy ranking holds: Spearman between the MMD of each candidate set to the real
  sample computed on float32 features and on bfloat16 features.

    python bench/bench_embed_images.py [--n 500] [--threads 1] [--embedders pixels,lite0_64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from synque.embed import (
    EfficientNetLite0Embedder,
    InceptionFIDEmbedder,
    PixelEmbedder,
)
from synque.embed.base import CachedEmbedder
from synque.proxies.mmd import mmd

#: name -> (factory(cache_dir, dtype), whether it has a dtype at all)
EMBEDDERS: dict[str, tuple[Callable[[Path, str], CachedEmbedder], bool]] = {
    "pixels": (lambda c, d: PixelEmbedder(cache_dir=c, progress=False), False),
    "lite0_32": (lambda c, d: EfficientNetLite0Embedder(c, size=32, dtype=d, progress=False), True),
    "lite0_64": (lambda c, d: EfficientNetLite0Embedder(c, size=64, dtype=d, progress=False), True),
    "lite0_224": (
        lambda c, d: EfficientNetLite0Embedder(c, size=224, dtype=d, progress=False), True
    ),
    "inception": (lambda c, d: InceptionFIDEmbedder(c, dtype=d, progress=False), True),
}


def write_sets(root: Path, n: int, real: int, set_size: int) -> tuple[
    list[str], np.ndarray, dict[str, list[str]]
]:
    """The clean digits as PNG, and candidate sets (name -> files) that differ from the real
    sample (the first `real` clean digits) by a known, graded amount."""
    digits = load_digits()
    pixels = (digits.images[:n] * (255 / 16)).round().astype(np.uint8)
    labels = digits.target[:n]
    rng = np.random.default_rng(0)

    def write(folder: str, arrays: list[np.ndarray]) -> list[str]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        paths = [str(root / folder / f"{i}.png") for i in range(len(arrays))]
        for path, array in zip(paths, arrays, strict=True):
            Image.fromarray(array).save(path)
        return paths

    clean = write("clean", list(pixels))
    base = pixels[real : real + set_size]
    sets = {"clean": clean[real : real + set_size]}
    for sigma in (8, 24, 64):
        noisy = np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).round().astype(np.uint8)
        sets[f"noise{sigma}"] = write(f"noise{sigma}", list(noisy))
    blur = ImageFilter.GaussianBlur(0.8)
    sets["blur"] = write("blur", [np.asarray(Image.fromarray(a).filter(blur)) for a in base])
    low = [i for i in range(real, n) if labels[i] < 5][:set_size]
    sets["digits0-4"] = [clean[i] for i in low]
    return clean, labels, sets


def quality(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """5-fold accuracy of a logistic regression (standardised features) and of 1-NN."""
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return (
        float(cross_val_score(logistic, features, labels, cv=5).mean()),
        float(cross_val_score(KNeighborsClassifier(1), features, labels, cv=5).mean()),
    )


def run_one(
    factory: Callable[[Path, str], CachedEmbedder], dtype: str, cache: Path,
    clean: list[str], sets: dict[str, list[str]], real: int,
) -> dict[str, object]:
    embedder = factory(cache, dtype)
    start = time.perf_counter()
    if hasattr(embedder, "model"):
        embedder.model()  # load outside the timed embedding
    load = time.perf_counter() - start
    start = time.perf_counter()
    features = embedder.embed(clean)
    per_second = len(clean) / (time.perf_counter() - start)
    real_features = features[:real]
    mmds = {
        name: mmd(embedder.embed(paths), real_features, seed=0) for name, paths in sets.items()
    }
    return {"id": embedder.id, "load": load, "rate": per_second, "features": features,
            "mmd": mmds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="clean digits embedded and timed")
    parser.add_argument("--real", type=int, default=100, help="real sample: the first digits")
    parser.add_argument("--set-size", type=int, default=50, help="images per candidate set")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--embedders", default=",".join(EMBEDDERS))
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    names = opts.embedders.split(",")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clean, labels, sets = write_sets(Path(tmp) / "images", opts.n, opts.real, opts.set_size)
        for name in names:
            factory, has_dtype = EMBEDDERS[name]
            cache = Path(tmp) / name
            fp32 = run_one(factory, "float32", cache / "fp32", clean, sets, opts.real)
            bf16 = None
            if has_dtype:
                bf16 = run_one(factory, "bfloat16", cache / "bf16", clean, sets, opts.real)
            rows.append((name, fp32, bf16, quality(fp32["features"], labels)))
            print(f"done {name}", flush=True)

    device = "cuda" if torch.cuda.is_available() else f"cpu, {opts.threads} thread(s)"
    print(f"\n{opts.n} digits as PNG, candidate sets of {opts.set_size} vs a real sample of "
          f"{opts.real}; {device}; torch {torch.__version__}")
    head = (f"{'embedder':<10} {'dim':>5} {'load s':>7} {'fp32 img/s':>10} {'bf16 img/s':>10} "
            f"{'speedup':>7} {'max rel dev':>11} {'MMD rho':>7} {'logistic':>8} {'1-NN':>6}")
    print(head)
    print("-" * len(head))
    for name, fp32, bf16, (logistic, nn) in rows:
        dim = fp32["features"].shape[1]
        if bf16 is None:
            bf = f"{'-':>10} {'-':>7} {'-':>11} {'-':>7}"
        else:
            a, b = fp32["features"], bf16["features"]
            deviation = float((np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)).max())
            order = list(sets)
            rho = spearmanr([fp32["mmd"][k] for k in order], [bf16["mmd"][k] for k in order])[0]
            bf = (f"{bf16['rate']:>10.1f} {bf16['rate'] / fp32['rate']:>6.2f}x "
                  f"{deviation:>11.4f} {rho:>7.3f}")
        print(f"{name:<10} {dim:>5} {fp32['load']:>7.2f} {fp32['rate']:>10.1f} {bf} "
              f"{logistic:>8.3f} {nn:>6.3f}")

    print("\nMMD (polynomial kernel) of each candidate set to the real sample, fp32 | bf16")
    print(f"{'embedder':<10} " + " ".join(f"{k:>19}" for k in sets))
    for name, fp32, bf16, _ in rows:
        cells = [
            f"{fp32['mmd'][k]:>9.4g}|{bf16['mmd'][k] if bf16 else float('nan'):<9.4g}"
            for k in sets
        ]
        print(f"{name:<10} " + " ".join(cells))


if __name__ == "__main__":
    main()

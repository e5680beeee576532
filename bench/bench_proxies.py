"""Benchmark: seconds per image proxy on one synthetic/real pair of feature matrices (not a test).

Random non-negative features shaped like Inception pool features (default n=1000, dim=2048),
each proxy computed through the registry with its configs/proxy defaults, single-threaded
BLAS (the machine is shared).  precision/recall/density/coverage share one computation: the
first pays for it, the other three read the cache.  Also times the textbook FD with a plain
`scipy.linalg.sqrtm` of the 2048 x 2048 product, for the speed-up and the difference.

    python bench/bench_proxies.py [--n 1000] [--n-real 1500] [--dim 2048]

KID draws random subsets only when a set is larger than subset_size or the sizes differ;
with two sets of n <= 1000 every subset is the whole set and it is computed once
(use --n-real to time the 100-subset path).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from synque.proxies import PROXIES, ProxyWarning, compute_proxy  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "proxy"
DEFAULT_PROXIES = ["fid", "kid", "precision", "recall", "density", "coverage"]


def features(n: int, dim: int, shift: float, seed: int) -> np.ndarray:
    """ReLU-like float32 features with correlated dimensions (low-rank mixing plus noise)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(64, dim)) / 8.0
    latent = rng.normal(size=(n, 64)) + shift
    return np.maximum(latent @ mixing + 0.3 * rng.normal(size=(n, dim)), 0.0).astype(np.float32)


def fd_with_sqrtm(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook FD: covariances, then sqrtm of their non-symmetric product."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root))


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="synthetic points")
    parser.add_argument("--n-real", type=int, default=None, help="real points (default: --n)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--proxies", nargs="+", default=DEFAULT_PROXIES)
    parser.add_argument("--no-sqrtm", action="store_true", help="skip the slow reference FD")
    opts = parser.parse_args()
    n_real = opts.n_real or opts.n

    synth = features(opts.n, opts.dim, 0.2, seed=1)
    real = features(n_real, opts.dim, 0.0, seed=2)
    print(f"synthetic {synth.shape}, real {real.shape}, float32, 1 BLAS thread")
    print(f"{'proxy':<10} {'seconds':>8} {'value':>12}")
    values: dict[str, float] = {}
    for name in opts.proxies:
        path = CONFIGS / f"{name}.yaml"
        params = OmegaConf.load(path)[name] if path.exists() else {}
        values[name], seconds = timed(compute_proxy, name, synth, real, params)
        arrow = "higher better" if PROXIES[name].higher_is_better else "lower better"
        print(f"{name:<10} {seconds:8.3f} {values[name]:12.5g}   ({arrow})")

    if "fid" in values and not opts.no_sqrtm:
        fid_seconds = timed(compute_proxy, "fid", synth, real, {})[1]
        ref, ref_seconds = timed(fd_with_sqrtm, synth, real)
        print(
            f"FD with plain sqrtm: {ref_seconds:.2f} s vs {fid_seconds:.3f} s "
            f"({ref_seconds / fid_seconds:.0f}x faster), "
            f"relative difference {abs(ref - values['fid']) / abs(ref):.1e}"
        )


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProxyWarning)  # n <= dim is the point of the default
        main()

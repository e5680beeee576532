"""MMD^2 with blocked kernel sums (memory O(block_size * n), never O(n^2))."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from synque.proxies.registry import register


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances in float64, clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _median_sq_dist(pooled: np.ndarray, max_points: int, seed: int) -> float:
    """Median of squared distances over distinct pooled pairs (subsampled to bound memory)."""
    if len(pooled) > max_points:
        idx = np.random.default_rng(seed).choice(len(pooled), size=max_points, replace=False)
        pooled = pooled[idx]
    if len(pooled) < 2:
        return 1.0
    iu = np.triu_indices(len(pooled), k=1)
    med = float(np.median(_sq_dists(pooled, pooled)[iu]))
    return med if med > 0 else 1.0  # all points identical: any bandwidth gives MMD 0


def _kernel_sum(
    a: np.ndarray,
    b: np.ndarray,
    kernel: Callable[[np.ndarray, np.ndarray], np.ndarray],
    block_size: int,
    same: bool,
) -> tuple[float, float]:
    """Sum of all entries of K(a, b) and, when ``a is b``, of its diagonal, in row blocks."""
    total, diag = 0.0, 0.0
    for start in range(0, len(a), block_size):
        stop = min(start + block_size, len(a))
        block = kernel(a[start:stop], b)
        total += float(block.sum())
        if same:
            diag += float(np.trace(block[:, start:stop]))
    return total, diag


@register("mmd", higher_is_better=False)
def mmd(
    synth: np.ndarray,
    real: np.ndarray,
    *,
    seed: int,
    estimator: str = "biased",
    kernel: str = "polynomial",
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    bandwidth: str | float = "median",
    median_max_points: int = 2000,
    block_size: int = 2048,
) -> float:
    """Squared MMD between synth (X) and real (Y); lower means closer distributions.

    Polynomial kernel ``(gamma <a, b> + coef0) ** degree`` with ``gamma = 1/dim`` by default
    (sklearn's ``polynomial_kernel`` defaults).  RBF kernel ``exp(-|a-b|^2 / (2 sigma^2))`` where
    ``bandwidth`` is sigma, or ``"median"`` for sigma^2 = median squared distance over distinct
    pairs of the pooled sample (at most ``median_max_points`` points, subsampled with ``seed``).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    x = np.asarray(synth, dtype=np.float64)
    y = np.asarray(real, dtype=np.float64)
    n, m = len(x), len(y)

    if kernel == "polynomial":
        g = 1.0 / x.shape[1] if gamma is None else float(gamma)

        def kfn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return (g * (a @ b.T) + coef0) ** degree

    elif kernel == "rbf":
        if isinstance(bandwidth, str):
            if bandwidth != "median":
                raise ValueError(f"bandwidth must be 'median' or a number, got {bandwidth!r}")
            sigma2 = _median_sq_dist(np.vstack([x, y]), median_max_points, seed)
        else:
            if float(bandwidth) <= 0:
                raise ValueError(f"bandwidth must be positive, got {bandwidth}")
            sigma2 = float(bandwidth) ** 2

        def kfn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.exp(-_sq_dists(a, b) / (2.0 * sigma2))

    else:
        raise ValueError(f"unknown MMD kernel {kernel!r}; use 'polynomial' or 'rbf'")

    sxx, dxx = _kernel_sum(x, x, kfn, block_size, same=True)
    syy, dyy = _kernel_sum(y, y, kfn, block_size, same=True)
    sxy, _ = _kernel_sum(x, y, kfn, block_size, same=False)

    if estimator == "biased":
        return sxx / (n * n) + syy / (m * m) - 2.0 * sxy / (n * m)
    if estimator == "unbiased":
        if n < 2 or m < 2:
            raise ValueError("unbiased MMD needs at least 2 points in each set")
        return (sxx - dxx) / (n * (n - 1)) + (syy - dyy) / (m * (m - 1)) - 2.0 * sxy / (n * m)
    raise ValueError(f"unknown MMD estimator {estimator!r}; use 'biased' or 'unbiased'")

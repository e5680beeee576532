"""Precision, recall, density and coverage (Naeem et al. 2020) on k-nearest-neighbour manifolds.

Each set's manifold is the union of balls around its points with radius = the distance to the
point's ``nearest_k``-th neighbour in its own set.  precision: share of synthetic points inside
the real manifold; recall: share of real points inside the synthetic manifold; density: mean
number of real balls holding a synthetic point, over k; coverage: share of real balls that
hold at least one synthetic point.  All four are higher-is-better.

The four are registered as four proxies (one value each, one config file each) but share one
computation: the values are cached for the last (synthetic, real, nearest_k) seen, keyed on the
arrays' content, so ``proxy=[precision,recall,density,coverage]`` computes the distances once.
Distances are computed in row blocks, so memory is O(block_size * n), never O(n^2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from synque.proxies.registry import register


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (scikit-learn's, imported here: importing it costs most of a second)."""
    from sklearn.metrics.pairwise import euclidean_distances

    return euclidean_distances(a, b)


@dataclass(frozen=True)
class Manifolds:
    """The four values of one (synthetic, real, nearest_k) comparison."""

    precision: float
    recall: float
    density: float
    coverage: float


def _fingerprint(a: np.ndarray) -> tuple:
    """Content key of an array: a cache hit needs the same values, not just the same object."""
    a = np.ascontiguousarray(a)
    return a.shape, a.dtype.str, hashlib.sha256(memoryview(a).cast("B")).hexdigest()


_last: dict[tuple, Manifolds] = {}  # at most one entry: the latest comparison


def _kth_neighbour_radii(x: np.ndarray, nearest_k: int, block_size: int) -> np.ndarray:
    """Distance of each point to its nearest_k-th neighbour in x (itself excluded)."""
    radii = np.empty(len(x))
    for start in range(0, len(x), block_size):
        dist = _distances(x[start : start + block_size], x)
        # column 0 of the sorted row is the point itself (distance 0), so index k is the k-th
        radii[start : start + block_size] = np.partition(dist, nearest_k, axis=1)[:, nearest_k]
    return radii


def compute_manifolds(
    synth: np.ndarray, real: np.ndarray, nearest_k: int = 5, block_size: int = 1024
) -> Manifolds:
    """The four values, from the cache when the last call compared the same arrays with this k.

    Strict ``<`` against the radii, as in the reference ``prdc`` package (prdc==0.2), whose
    values these equal on float64 inputs.
    """
    if nearest_k < 1:
        raise ValueError(f"nearest_k must be >= 1, got {nearest_k}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if min(len(synth), len(real)) <= nearest_k:
        raise ValueError(
            f"precision/recall/density/coverage need more than nearest_k={nearest_k} points per "
            f"set, got {len(synth)} synthetic and {len(real)} real"
        )
    key = (_fingerprint(synth), _fingerprint(real), int(nearest_k))
    if key in _last:
        return _last[key]

    fake = np.asarray(synth, dtype=np.float64)
    true = np.asarray(real, dtype=np.float64)
    real_radii = _kth_neighbour_radii(true, nearest_k, block_size)
    fake_radii = _kth_neighbour_radii(fake, nearest_k, block_size)
    precise = balls_holding = 0
    covered = np.zeros(len(true), dtype=bool)  # real ball holds a synthetic point
    recalled = np.zeros(len(true), dtype=bool)  # real point lies in a synthetic ball
    for start in range(0, len(fake), block_size):
        stop = start + block_size
        dist = _distances(fake[start:stop], true)  # [block, n_real]
        inside = dist < real_radii[None, :]
        precise += int(inside.any(axis=1).sum())
        balls_holding += int(inside.sum())
        covered |= inside.any(axis=0)
        recalled |= (dist < fake_radii[start:stop, None]).any(axis=0)
    result = Manifolds(
        precision=precise / len(fake),
        recall=float(recalled.mean()),
        density=balls_holding / (nearest_k * len(fake)),
        coverage=float(covered.mean()),
    )
    _last.clear()
    _last[key] = result
    return result


@register("precision", higher_is_better=True)
def precision(
    synth: np.ndarray, real: np.ndarray, *, seed: int, nearest_k: int = 5, block_size: int = 1024
) -> float:
    """Share of synthetic points inside the real k-NN manifold (fidelity)."""
    del seed  # deterministic
    return compute_manifolds(synth, real, nearest_k, block_size).precision


@register("recall", higher_is_better=True)
def recall(
    synth: np.ndarray, real: np.ndarray, *, seed: int, nearest_k: int = 5, block_size: int = 1024
) -> float:
    """Share of real points inside the synthetic k-NN manifold (diversity)."""
    del seed
    return compute_manifolds(synth, real, nearest_k, block_size).recall


@register("density", higher_is_better=True)
def density(
    synth: np.ndarray, real: np.ndarray, *, seed: int, nearest_k: int = 5, block_size: int = 1024
) -> float:
    """Mean count of real balls holding a synthetic point, over k (1 = as dense as real)."""
    del seed
    return compute_manifolds(synth, real, nearest_k, block_size).density


@register("coverage", higher_is_better=True)
def coverage(
    synth: np.ndarray, real: np.ndarray, *, seed: int, nearest_k: int = 5, block_size: int = 1024
) -> float:
    """Share of real balls holding at least one synthetic point (robust diversity)."""
    del seed
    return compute_manifolds(synth, real, nearest_k, block_size).coverage

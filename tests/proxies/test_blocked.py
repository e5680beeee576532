"""Blocked proxies equal their direct formulas and stay within their memory bound.

Why: MMD, KID and FD must scale to 100k x 100k embeddings without an n x m kernel matrix or a
float64 copy of a whole set; these tests pin the values to the textbook formulas (full
matrices, computed here) at block sizes that do not divide the set sizes, and measure the
memory a call allocates with tracemalloc (numpy reports its buffers to it).
"""

from __future__ import annotations

import tracemalloc
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import scipy.linalg

from synque.proxies import ProxyWarning, compute_proxy
from synque.proxies import frechet as frechet_module
from synque.proxies import mmd as mmd_module


def _gauss(n: int, dim: int, shift: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, dim)) + shift).astype(np.float32)


def _peak_mib(fn: Callable[[], float]) -> float:
    """MiB allocated at the peak of one call, beyond what existed before it."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProxyWarning)
            fn()
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------------------- MMD


def _direct_mmd(x: np.ndarray, y: np.ndarray, kernel: str, estimator: str, sigma2: float) -> float:
    """The textbook MMD^2 with full kernel matrices in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if kernel == "polynomial":
            return (a @ b.T / a.shape[1] + 1.0) ** 3
        sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-sq / (2 * sigma2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    off_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    off_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return off_x + off_y - 2 * kxy.mean()


def test_mmd_by_hand_with_a_block_that_does_not_divide() -> None:
    # k(a, b) = (a b + 1)^3 in 1-D.  Kxx over x = 1, 2, 3: 8, 125, 1000 on the diagonal,
    # 27, 64, 343 off it (twice each): sum 2001.  Kyy over y = 0, 1: 1, 8, and 1 twice: 11.
    # Kxy: y = 0 gives 1 three times, y = 1 gives 8 + 27 + 64: sum 102.
    x = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    y = np.array([[0.0], [1.0]], dtype=np.float32)
    biased = 2001 / 9 + 11 / 4 - 2 * 102 / 6  # = 6879 / 36
    unbiased = (2001 - 1133) / 6 + (11 - 9) / 2 - 2 * 102 / 6  # = 335 / 3
    for block_size in (1, 2, 5):
        p = {"block_size": block_size}
        assert compute_proxy("mmd", x, y, p) == pytest.approx(6879 / 36, rel=1e-14)
        assert biased == pytest.approx(6879 / 36, rel=1e-14)
        got = compute_proxy("mmd", x, y, {**p, "estimator": "unbiased"})
        assert got == pytest.approx(335 / 3, rel=1e-14) and unbiased == pytest.approx(335 / 3)


@pytest.mark.parametrize("kernel", ["polynomial", "rbf"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_blocked_equals_direct_formula(kernel: str, estimator: str) -> None:
    x, y = _gauss(23, 5, 0.0, 1), _gauss(17, 5, 0.4, 2)
    sigma2 = 3.0
    want = _direct_mmd(x, y, kernel, estimator, sigma2)
    assert abs(want) > 1e-3
    for block_size in (1, 3, 7, 16, 2048):
        params = {"kernel": kernel, "estimator": estimator, "block_size": block_size}
        if kernel == "rbf":
            params["bandwidth"] = float(np.sqrt(sigma2))
        assert compute_proxy("mmd", x, y, params) == pytest.approx(want, rel=1e-10)


def test_mmd_median_subsample_is_the_pooled_draw() -> None:
    # The median bandwidth draws rows of vstack([x, y]) without building it: same rows, same seed
    x, y = _gauss(40, 3, 0.0, 3), _gauss(30, 3, 1.0, 4)
    got = mmd_module._pooled_subsample(x, y, max_points=25, seed=7)
    idx = np.random.default_rng(7).choice(70, size=25, replace=False)
    np.testing.assert_array_equal(got, np.vstack([x, y]).astype(np.float64)[idx])
    np.testing.assert_array_equal(mmd_module._pooled_subsample(x, y, 100, 7), np.vstack([x, y]))


def test_mmd_memory_is_tiles_not_sets() -> None:
    # 6000 x 64 float32 per set: a float64 copy of a set is 2.9 MiB, a 6000 x 6000 kernel 275 MiB;
    # 256-row tiles need 2 x 0.5 MiB plus two 256 x 64 row blocks.
    x, y = _gauss(6000, 64, 0.0, 5), _gauss(6000, 64, 0.1, 6)
    peak = _peak_mib(lambda: compute_proxy("mmd", x, y, {"block_size": 256}))
    assert peak < 1.8, f"peak {peak:.2f} MiB"


# ---------------------------------------------------------------------------------------- KID


def test_kid_float32_inputs_use_float64_kernels_and_little_memory() -> None:
    x, y = _gauss(3000, 48, 0.0, 7), _gauss(2500, 48, 0.2, 8)
    params = {"n_subsets": 5, "subset_size": 60, "block_size": 25}
    got = compute_proxy("kid", x, y, params, seed=3)
    want = compute_proxy("kid", x.astype(np.float64), y.astype(np.float64), params, seed=3)
    assert got == pytest.approx(want, rel=1e-12)  # float32 inputs, float64 dot products
    peak = _peak_mib(lambda: compute_proxy("kid", x, y, params, seed=3))
    assert peak < 0.5, f"peak {peak:.2f} MiB"  # a float64 copy of x alone is 1.1 MiB


# ----------------------------------------------------------------------------------------- FD


def _direct_fd(x: np.ndarray, y: np.ndarray) -> float:
    """FD from the whole centred float64 data (the unstreamed formula)."""
    a = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    b = y.astype(np.float64) - y.mean(0, dtype=np.float64)
    a, b = a / np.sqrt(len(a) - 1), b / np.sqrt(len(b) - 1)
    mean_term = np.sum((x.mean(0, dtype=np.float64) - y.mean(0, dtype=np.float64)) ** 2)
    return float(
        mean_term + np.sum(a * a) + np.sum(b * b) - 2 * frechet_module.trace_sqrt_product(a, b)
    )


def _fd_by_sqrtm(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root))


@pytest.mark.parametrize(
    ("n_x", "n_y", "dim"),
    [(61, 45, 8), (9, 70, 20), (70, 9, 20), (10, 14, 20)],  # thick/thick, thin/thick, thin/thin
)
def test_fd_streamed_equals_direct_formula(n_x: int, n_y: int, dim: int) -> None:
    x, y = _gauss(n_x, dim, 0.0, 9), 1.3 * _gauss(n_y, dim, 0.3, 10)
    want = _direct_fd(x, y)
    reference = _fd_by_sqrtm(x, y)
    assert want == pytest.approx(reference, rel=1e-6)  # sqrtm itself is ~1e-8 off when thin
    for block_size in (1, 4, 7, 4096):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProxyWarning)
            got = compute_proxy("fid", x, y, {"block_size": block_size})
        assert got == pytest.approx(want, rel=1e-10)


def test_fd_by_hand_streamed_one_row_at_a_time() -> None:
    # x = 0, 2: mean 1, variance 2; y = 1, 3, 5: mean 3, variance 4: FD = 4 + (sqrt 2 - 2)^2
    x, y = np.array([[0.0], [2.0]]), np.array([[1.0], [3.0], [5.0]])
    got = compute_proxy("fid", x, y, {"block_size": 1})
    assert got == pytest.approx(10 - 4 * np.sqrt(2), rel=1e-12)


def test_fd_memory_is_a_covariance_not_a_copy() -> None:
    # 20000 x 16 float32 per set: a float64 copy is 2.4 MiB; covariances are 2 KiB each
    x, y = _gauss(20000, 16, 0.0, 11), _gauss(20000, 16, 0.5, 12)
    peak = _peak_mib(lambda: compute_proxy("fid", x, y, {"block_size": 512}))
    assert peak < 0.6, f"peak {peak:.2f} MiB"
    thin = _gauss(10, 16, 0.0, 13)  # thin against thick: the streamed QR route
    peak = _peak_mib(lambda: compute_proxy("fid", thin, y, {"block_size": 512}))
    assert peak < 0.6, f"peak {peak:.2f} MiB"

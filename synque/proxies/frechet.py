"""Frechet distance between Gaussians fitted to two embedding sets (FID on Inception features).

FD = |mu_s - mu_r|^2 + tr S_s + tr S_r - 2 tr sqrt(S_s S_r).  The trace term is the costly and
fragile part: ``scipy.linalg.sqrtm`` of a 2048 x 2048 non-symmetric product is slow, returns
complex round-off and needs ad-hoc fixes.  Here it is computed from a symmetric factorisation:
if S_s = F F^T then the eigenvalues of S_s S_r are those of the symmetric PSD matrix F^T S_r F,
so tr sqrt(S_s S_r) = sum sqrt(eigvalsh(F^T S_r F)); when S_r = G G^T too, that sum is the
nuclear norm (sum of singular values) of G^T F.  A set with n <= dim samples is factored by its
own centred data (F = X_c^T / sqrt(n - 1)), which makes the cost O(n_s n_r dim) instead of the
O(n dim^2 + dim^3) of the covariance route used when both sets exceed dim.

Why streamed: 100k x 384 float32 embeddings are 150 MB, their float64 centred copy 300 MB per
set.  Only means and covariances are needed, so a set with more rows than dimensions is read in
row blocks (float64 accumulation, two passes: the mean, then the centred covariance) and never
copied whole; a set with n <= dim is at most dim x dim.  When one set is thin and the other is
not, the nuclear norm of B A^T is taken from the R factor of a QR updated block by block, so the
thin route keeps its accuracy (no Gram matrix, no squared condition number) in bounded memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from synque.proxies.registry import ProxyWarning, register


def _centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, centred data scaled so that its Gram A^T A is the unbiased covariance)."""
    mean = x.mean(axis=0)
    return mean, (x - mean) / np.sqrt(len(x) - 1)


def _eigen_factor(cov: np.ndarray) -> np.ndarray:
    """F with F F^T = cov (cov symmetric PSD); tiny negative eigenvalues are round-off: 0."""
    eigvals, eigvecs = scipy.linalg.eigh(cov, driver="evd")
    return eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))


def _sum_sqrt_eigvals(sym: np.ndarray) -> float:
    """sum sqrt(lambda) over the eigenvalues of a symmetric PSD matrix, negatives clipped."""
    sym = 0.5 * (sym + sym.T)  # remove the asymmetric round-off of the matrix products
    return float(np.sqrt(np.clip(scipy.linalg.eigvalsh(sym), 0.0, None)).sum())


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """tr sqrt(A^T A B^T B) for centred, scaled data A [n_a, dim] and B [n_b, dim], float64.

    With F = A^T for the smaller set (n_a <= dim) the value is the nuclear norm of B A^T: cost
    O(n_a n_b dim), memory n_b x n_a (no more than B itself), no squared condition number.  When
    both sets exceed dim, F is the covariance's eigen-factor and the eigenvalues of the symmetric
    F^T S_b F are summed: O(n dim^2 + dim^3), memory dim x dim.
    """
    if len(a) > len(b):
        a, b = b, a  # tr sqrt(S_a S_b) = tr sqrt(S_b S_a): factor the smaller set
    if len(a) <= a.shape[1]:
        return float(scipy.linalg.svdvals(b @ a.T).sum())
    factor = _eigen_factor(a.T @ a)
    return _sum_sqrt_eigvals(factor.T @ (b.T @ b) @ factor)


@dataclass
class _Moments:
    """What the FD needs of one set: the raw rows (not copied), mean, and either the centred
    scaled data (n <= dim, at most dim x dim) or the unbiased covariance (n > dim)."""

    raw: np.ndarray
    mean: np.ndarray
    data: np.ndarray | None
    cov: np.ndarray | None

    @property
    def trace(self) -> float:
        """tr S: the squared Frobenius norm of the scaled data, or the covariance's trace."""
        if self.data is not None:
            return float(np.sum(self.data * self.data))
        return float(np.trace(self.cov))

    def centred_blocks(self, block_size: int) -> Iterator[np.ndarray]:
        """Rows of (x - mean) / sqrt(n - 1) in float64, ``block_size`` at a time."""
        scale = np.sqrt(len(self.raw) - 1)
        for start in range(0, len(self.raw), block_size):
            yield (np.asarray(self.raw[start : start + block_size], np.float64) - self.mean) / scale


def _moments(x: np.ndarray, block_size: int) -> _Moments:
    """Mean and data or covariance of x, reading it in float64 row blocks."""
    n, dim = x.shape
    if n <= dim:  # thin: the centred data is no larger than a covariance
        mean, data = _centred(np.asarray(x, dtype=np.float64))
        return _Moments(x, mean, data, None)
    total = np.zeros(dim)
    for start in range(0, n, block_size):
        total += np.asarray(x[start : start + block_size], np.float64).sum(axis=0)
    moments = _Moments(x, total / n, None, np.zeros((dim, dim)))
    for block in moments.centred_blocks(block_size):
        moments.cov += block.T @ block
    return moments


def _thin_thick_trace(thin: np.ndarray, thick: _Moments, block_size: int) -> float:
    """Nuclear norm of B A^T (A thin data, B the thick set's scaled centred rows), streamed.

    The singular values of a tall matrix are those of its R factor, and R of [R_old; C] is R of
    all rows so far: so each block's B_c A^T is folded into an n_a x n_a R and dropped.
    """
    r = np.zeros((0, len(thin)))
    for block in thick.centred_blocks(block_size):
        r = np.linalg.qr(np.vstack([r, block @ thin.T]), mode="r")
    return float(scipy.linalg.svdvals(r).sum())


def _trace_sqrt(s: _Moments, r: _Moments, block_size: int) -> float:
    """tr sqrt(S_s S_r) by the cheapest accurate route for the two sets' shapes."""
    if s.data is not None and r.data is not None:
        return trace_sqrt_product(s.data, r.data)
    if s.data is not None or r.data is not None:
        thin, thick = (s, r) if s.data is not None else (r, s)
        return _thin_thick_trace(thin.data, thick, block_size)  # type: ignore[arg-type]
    small, large = (s, r) if len(s.raw) <= len(r.raw) else (r, s)
    factor = _eigen_factor(small.cov)  # type: ignore[arg-type]
    return _sum_sqrt_eigvals(factor.T @ large.cov @ factor)


@register("fid", higher_is_better=False)
def frechet_distance(
    synth: np.ndarray, real: np.ndarray, *, seed: int, block_size: int = 4096
) -> float:
    """Frechet distance between Gaussians fitted to synth and real (lower = closer).

    Covariances are unbiased (ddof=1, as in the reference FID code).  With no more samples than
    dimensions a covariance is singular and the value is strongly biased by the sample size, so
    a ``ProxyWarning`` says so (the repr stage logs it as ``synque.warning.fid``).  The result is
    clipped at 0: FD is a squared distance and only round-off makes it negative.  Sets are read
    ``block_size`` rows at a time (memory: dim x dim plus one block, beyond the inputs).
    """
    del seed  # deterministic
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    x, y = np.asarray(synth), np.asarray(real)
    n_x, n_y, dim = len(x), len(y), x.shape[1]
    if min(n_x, n_y) < 2:
        raise ValueError(f"fid needs at least 2 points per set, got {n_x} synthetic, {n_y} real")
    if min(n_x, n_y) <= dim:
        warnings.warn(
            f"fid: {n_x} synthetic and {n_y} real samples for {dim} dimensions; with n <= dim the "
            "covariance is singular and the value depends strongly on n (compare sets of one size)",
            ProxyWarning,
            stacklevel=2,
        )
    s, r = _moments(x, block_size), _moments(y, block_size)
    mean_term = float(np.sum((s.mean - r.mean) ** 2))
    trace_term = s.trace + r.trace
    return max(0.0, mean_term + trace_term - 2.0 * _trace_sqrt(s, r, block_size))

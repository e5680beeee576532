"""Frechet distance between Gaussians fitted to two embedding sets (FID on Inception features).

FD = |mu_s - mu_r|^2 + tr S_s + tr S_r - 2 tr sqrt(S_s S_r).  The trace term is the costly and
fragile part: ``scipy.linalg.sqrtm`` of a 2048 x 2048 non-symmetric product is slow, returns
complex round-off and needs ad-hoc fixes.  Here it is computed from a symmetric factorisation:
if S_s = F F^T then the eigenvalues of S_s S_r are those of the symmetric PSD matrix F^T S_r F,
so tr sqrt(S_s S_r) = sum sqrt(eigvalsh(F^T S_r F)); when S_r = G G^T too, that sum is the
nuclear norm (sum of singular values) of G^T F.  A set with n <= dim samples is factored by its
own centred data (F = X_c^T / sqrt(n - 1)), which makes the cost O(n_s n_r dim) instead of the
O(n dim^2 + dim^3) of the covariance route used when both sets exceed dim.
"""

from __future__ import annotations

import warnings

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


@register("fid", higher_is_better=False)
def frechet_distance(synth: np.ndarray, real: np.ndarray, *, seed: int) -> float:
    """Frechet distance between Gaussians fitted to synth and real (lower = closer).

    Covariances are unbiased (ddof=1, as in the reference FID code).  With no more samples than
    dimensions a covariance is singular and the value is strongly biased by the sample size, so
    a ``ProxyWarning`` says so (the repr stage logs it as ``synque.warning.fid``).  The result is
    clipped at 0: FD is a squared distance and only round-off makes it negative.
    """
    del seed  # deterministic
    x = np.asarray(synth, dtype=np.float64)
    y = np.asarray(real, dtype=np.float64)
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
    mean_x, a = _centred(x)
    mean_y, b = _centred(y)
    mean_term = float(np.sum((mean_x - mean_y) ** 2))
    trace_term = float(np.sum(a * a) + np.sum(b * b))  # tr S = squared Frobenius norm of A
    return max(0.0, mean_term + trace_term - 2.0 * trace_sqrt_product(a, b))

"""KID: kernel inception distance, the unbiased MMD^2 with a cubic kernel averaged over subsets.

Unlike FID it has an unbiased estimator, so values from sets of different sizes are
comparable; averaging over random equal-size subsets is the usual protocol (Binkowski et al.
2018): ``n_subsets`` draws of ``subset_size`` points (without replacement) from each set.

Why quadratic forms: the subsets overlap heavily (100 subsets of 1000 from a few thousand
points), so recomputing each subset's kernel matrices repeats the same dot products 100 times.
With the subsets as 0/1 indicator rows W, every subset's kernel sum is one row of
diag(W K W^T), and K is computed once, in block_size x block_size tiles.  For sets much
larger than the subsets the whole K costs more than the subsets' kernels, so those are
computed per subset instead; the cheaper of the two is chosen by counting kernel entries.

Memory: the inputs stay in their own dtype; only a tile's rows (or one subset) are converted to
float64, so 100k x 100k float32 sets cost the subsets' kernels (3 x subset_size^2 float64,
24 MB at 1000), never a float64 copy of a whole set.
"""

from __future__ import annotations

import numpy as np

from synque.proxies.registry import register


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(a, b) = (a.b / dim + 1)^3, the KID kernel, built in place (two tiles at the peak)."""
    tile = a @ b.T
    tile /= a.shape[1]
    tile += 1.0
    square = tile * tile
    tile *= square
    return tile


def _f64(a: np.ndarray) -> np.ndarray:
    """float64 view or copy of a slice: the kernel's dot products are never taken in float32."""
    return np.asarray(a, dtype=np.float64)


def _weighted_kernel_sums(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray, block_size: int
) -> np.ndarray:
    """wa[s] K(a, b) wb[s]^T for every subset s (rows of the indicators), K in square tiles."""
    sums = np.zeros(len(wa))
    for i in range(0, len(a), block_size):
        rows = _f64(a[i : i + block_size])
        for j in range(0, len(b), block_size):
            tile = _cubic_kernel(rows, _f64(b[j : j + block_size]))
            weighted = tile @ wb[:, j : j + block_size].T
            del tile  # freed before the next tile is built: two tiles at the peak, not three
            sums += np.einsum("is,si->s", weighted, wa[:, i : i + block_size])
    return sums


def _cubic_diagonal(a: np.ndarray, block_size: int) -> np.ndarray:
    """k(a_i, a_i) for every row, in float64 row blocks."""
    blocks = [_f64(a[i : i + block_size]) for i in range(0, len(a), block_size)]
    return np.concatenate([(np.einsum("ij,ij->i", c, c) / a.shape[1] + 1.0) ** 3 for c in blocks])


def _unbiased_mmd2(
    x: np.ndarray, y: np.ndarray, wx: np.ndarray, wy: np.ndarray, block_size: int
) -> np.ndarray:
    """Unbiased MMD^2 of every subset given as indicator rows (diagonals of Kxx, Kyy dropped)."""
    size = wx[0].sum()
    diag_x, diag_y = _cubic_diagonal(x, block_size), _cubic_diagonal(y, block_size)
    pairs = size * (size - 1)
    xx = (_weighted_kernel_sums(x, x, wx, wx, block_size) - wx @ diag_x) / pairs
    yy = (_weighted_kernel_sums(y, y, wy, wy, block_size) - wy @ diag_y) / pairs
    xy = _weighted_kernel_sums(x, y, wx, wy, block_size) / (size * size)
    return xx + yy - 2.0 * xy


def _indicators(draws: list[np.ndarray], n: int) -> np.ndarray:
    """[len(draws), n] 0/1 matrix: row s marks the points of subset s."""
    rows = np.zeros((len(draws), n))
    rows[np.arange(len(draws))[:, None], np.stack(draws)] = 1.0
    return rows


def subset_values(
    x: np.ndarray,
    y: np.ndarray,
    draws: list[tuple[np.ndarray, np.ndarray]],
    block_size: int = 2048,
    whole_sets: bool | None = None,
) -> np.ndarray:
    """Unbiased MMD^2 of each drawn (synthetic indices, real indices) pair of subsets.

    ``whole_sets``: True = kernel of the whole sets once, False = each subset's own kernels,
    None = whichever computes fewer kernel entries (the values are the same).
    """
    size = len(draws[0][0])
    n_x, n_y = len(x), len(y)
    if whole_sets is None:
        whole_sets = n_x * n_x + n_y * n_y + n_x * n_y <= 3 * len(draws) * size * size
    if whole_sets:
        wx = _indicators([ix for ix, _ in draws], n_x)
        wy = _indicators([iy for _, iy in draws], n_y)
        return _unbiased_mmd2(x, y, wx, wy, block_size)
    ones = np.ones((1, size))
    return np.array(
        [_unbiased_mmd2(_f64(x[ix]), _f64(y[iy]), ones, ones, block_size)[0] for ix, iy in draws]
    )


@register("kid", higher_is_better=False)
def kid(
    synth: np.ndarray,
    real: np.ndarray,
    *,
    seed: int,
    n_subsets: int = 100,
    subset_size: int = 1000,
    random_state: int | None = None,
    block_size: int = 2048,
) -> float:
    """Mean over subsets of the unbiased MMD^2 between synth and real; lower is better.

    Each subset holds ``min(subset_size, n_synth, n_real)`` points of each set, drawn with
    ``random_state`` (null = the run seed).  When that is every point of both sets, all subsets
    are the same sets in another order, so the value is computed once.
    """
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    x, y = np.asarray(synth), np.asarray(real)  # converted to float64 per tile or subset
    n_x, n_y = len(x), len(y)
    size = min(int(subset_size), n_x, n_y)
    if size < 2:
        raise ValueError(
            f"kid needs subsets of at least 2 points, got subset_size={subset_size} "
            f"with {n_x} synthetic and {n_y} real points"
        )
    if size == n_x == n_y:
        draws = [(np.arange(n_x), np.arange(n_y))]
    else:
        rng = np.random.default_rng(seed if random_state is None else random_state)
        draws = [
            (rng.choice(n_x, size, replace=False), rng.choice(n_y, size, replace=False))
            for _ in range(int(n_subsets))
        ]
    return float(np.mean(subset_values(x, y, draws, block_size)))

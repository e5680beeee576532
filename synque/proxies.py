"""Representation-based proxies that score a synthetic set against a small real sample.

Every proxy takes two embedding matrices (``synth`` and ``real``, shape ``[n, dim]``) and returns
one float.  The registry lets configs name proxies by string, and ``higher_is_better`` tells the
ranking code which direction is good without hard-coding it per proxy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PROXIES", "ProxySpec", "compute_proxy", "register"]

# Keys that describe a proxy in the config but are not arguments of its function.
CONFIG_ONLY_KEYS = frozenset({"name", "higher_is_better", "variant"})


@dataclass(frozen=True)
class ProxySpec:
    """A registered proxy: its function and which direction of its value means "more real"."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool


PROXIES: dict[str, ProxySpec] = {}


def register(name: str, higher_is_better: bool) -> Callable[[Callable[..., float]], Callable]:
    """Add a proxy function to ``PROXIES`` so configs can refer to it by ``name``."""

    def decorator(fn: Callable[..., float]) -> Callable[..., float]:
        if name in PROXIES:
            raise ValueError(f"proxy {name!r} is already registered")
        PROXIES[name] = ProxySpec(name=name, fn=fn, higher_is_better=higher_is_better)
        return fn

    return decorator


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Turn an OmegaConf node (or any mapping) into plain Python containers."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # omegaconf is optional for callers passing plain dicts
        DictConfig = None  # noqa: N806
    if DictConfig is not None and isinstance(params, DictConfig):
        return dict(OmegaConf.to_container(params, resolve=True))  # type: ignore[arg-type]
    return dict(params)


def _validate_inputs(synth: Any, real: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fail early with a readable one-line message instead of deep inside sklearn or faiss."""
    arrays = []
    for label, arr in (("synth", synth), ("real", real)):
        a = np.asarray(arr)
        if a.ndim != 2:
            raise ValueError(f"{label} embeddings must be 2-D [n, dim], got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{label} embeddings are empty (0 rows)")
        if a.shape[1] == 0:
            raise ValueError(f"{label} embeddings have dimension 0")
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise ValueError(f"{label} embeddings must be real numbers, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{label} embeddings contain NaN or infinite values")
        arrays.append(a)
    s, r = arrays
    if s.shape[1] != r.shape[1]:
        raise ValueError(f"embedding dimensions differ: synth has {s.shape[1]}, real {r.shape[1]}")
    return s, r


def _check_params(spec: ProxySpec, params: dict[str, Any]) -> None:
    """Reject unknown option names so a typo in a config does not silently fall back."""
    if "seed" in params:
        raise ValueError("pass the seed through compute_proxy(seed=...), not in params")
    sig = inspect.signature(spec.fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    kw_only = inspect.Parameter.KEYWORD_ONLY
    allowed = {n for n, p in sig.parameters.items() if p.kind is kw_only and n != "seed"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for proxy {spec.name!r}; allowed: {sorted(allowed)}"
        )


def check_proxy_config(name: str, params: Mapping[str, Any]) -> None:
    """Validate a proxy's name and options without computing it (before any heavy work)."""
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}; known proxies: {sorted(PROXIES)}")
    kwargs = {k: v for k, v in _plain_params(params).items() if k not in CONFIG_ONLY_KEYS}
    _check_params(PROXIES[name], kwargs)


def compute_proxy(
    name: str,
    synth: np.ndarray,
    real: np.ndarray,
    params: Mapping[str, Any],
    seed: int = 42,
) -> float:
    """Look up proxy ``name``, validate the inputs and return its value as a float."""
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}; known proxies: {sorted(PROXIES)}")
    spec = PROXIES[name]
    kwargs = {k: v for k, v in _plain_params(params).items() if k not in CONFIG_ONLY_KEYS}
    _check_params(spec, kwargs)
    s, r = _validate_inputs(synth, real)
    return float(spec.fn(s, r, seed=seed, **kwargs))


# --------------------------------------------------------------------------------------------
# PAD: proxy A-distance from a synthetic-vs-real domain classifier
# --------------------------------------------------------------------------------------------


def _make_classifier(classifier: str, split_seed: int, classifier_params: Mapping[str, Any]):
    """Build the domain classifier; defaults reproduce the reference PAD setup."""
    if classifier == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**dict(classifier_params))
    if classifier == "xgboost":
        from xgboost import XGBClassifier

        opts: dict[str, Any] = {
            "n_estimators": 100,
            "max_depth": 4,
            "learning_rate": 0.1,
            "tree_method": "hist",
            "n_jobs": 2,
            "random_state": split_seed,
        }
        opts.update(classifier_params)
        return XGBClassifier(**opts)
    raise ValueError(f"unknown PAD classifier {classifier!r}; use 'logistic' or 'xgboost'")


def _pad_from_probs(p: np.ndarray, y: np.ndarray) -> float:
    """PAD = 2 (1 - 2 * mean |p - y|), the released-code form with soft errors."""
    err = float(np.mean(np.abs(np.asarray(p, dtype=np.float64) - y)))
    return 2.0 * (1.0 - 2.0 * err)


@register("pad", higher_is_better=False)
def pad(
    synth: np.ndarray,
    real: np.ndarray,
    *,
    seed: int,
    classifier: str = "logistic",
    split: str = "holdout",
    test_size: float = 0.2,
    n_folds: int = 5,
    split_seed: int = 42,
    classifier_params: Mapping[str, Any] | None = None,
) -> float:
    """Proxy A-distance: how well a classifier tells synthetic (0) from real (1); lower is better.

    ``seed`` is unused: the split is governed by ``split_seed`` so that the default matches the
    reference implementation (``train_test_split(..., test_size=0.2, random_state=42)``).
    """
    del seed
    x = np.vstack([synth, real])
    y = np.concatenate([np.zeros(len(synth), dtype=np.int64), np.ones(len(real), dtype=np.int64)])
    cparams = dict(classifier_params or {})

    if split == "holdout":
        from sklearn.model_selection import train_test_split

        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=test_size, random_state=split_seed
        )
        if len(np.unique(y_tr)) < 2:
            raise ValueError("PAD training split holds only one class; add more samples")
        clf = _make_classifier(classifier, split_seed, cparams)
        clf.fit(x_tr, y_tr)
        return _pad_from_probs(clf.predict_proba(x_te)[:, 1], y_te)

    if split == "kfold":
        from sklearn.model_selection import StratifiedKFold

        if min(len(synth), len(real)) < n_folds:
            raise ValueError(f"PAD kfold needs at least n_folds={n_folds} points in each set")
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=split_seed)
        oof = np.empty(len(y), dtype=np.float64)
        for tr, te in folds.split(x, y):
            clf = _make_classifier(classifier, split_seed, cparams)
            clf.fit(x[tr], y[tr])
            oof[te] = clf.predict_proba(x[te])[:, 1]
        return _pad_from_probs(oof, y)

    raise ValueError(f"unknown PAD split {split!r}; use 'holdout' or 'kfold'")


# --------------------------------------------------------------------------------------------
# MMD^2 with blocked kernel sums (memory O(block_size * n), never O(n^2))
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# MDM: mean distance to medoid (diversity of the synthetic set alone)
# --------------------------------------------------------------------------------------------


@register("mdm", higher_is_better=True)
def mdm(
    synth: np.ndarray,
    real: np.ndarray,
    *,
    seed: int,
    n_clusters: int = 5,
    random_state: int | None = None,
    max_iter: int = 100,
    n_cpu: int = 1,
) -> float:
    """Mean over FasterPAM clusters of the members' mean Euclidean distance to their medoid.

    Only the synthetic set is used (``real`` is ignored): the value measures spread/diversity.
    Members include the medoid itself (distance 0).  ``n_cpu=1`` keeps results independent of
    the machine's core count.  Uses an n x n float64 distance matrix.
    """
    del real
    import kmedoids
    from sklearn.metrics.pairwise import euclidean_distances

    x = np.asarray(synth, dtype=np.float64)
    n = len(x)
    k = min(int(n_clusters), n)
    if k < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if n == 1:
        return 0.0
    dist = euclidean_distances(x)  # symmetric with an exact zero diagonal
    rs = seed if random_state is None else random_state
    res = kmedoids.fasterpam(dist, k, max_iter=max_iter, random_state=int(rs), n_cpu=n_cpu)
    labels = np.asarray(res.labels)
    medoids = np.asarray(res.medoids)
    per_cluster = []
    for c, med in enumerate(medoids):
        members = np.flatnonzero(labels == c)
        if len(members):
            per_cluster.append(float(dist[members, med].mean()))
    return float(np.mean(per_cluster))


# --------------------------------------------------------------------------------------------
# MAUVE on precomputed features
# --------------------------------------------------------------------------------------------


@register("mauve", higher_is_better=True)
def mauve_score(
    synth: np.ndarray,
    real: np.ndarray,
    *,
    seed: int,
    num_buckets: str | int = "auto",
    pca_max_data: int = -1,
    kmeans_explained_var: float = 0.9,
    kmeans_num_redo: int = 5,
    kmeans_max_iter: int = 500,
    divergence_curve_discretization_size: int = 25,
    mauve_scaling_factor: float = 5.0,
) -> float:
    """MAUVE between synth (P) and real (Q) features; 1 means indistinguishable histograms.

    Features are passed directly, so mauve never loads a featurizer model or downloads anything.
    ``num_buckets="auto"`` is mauve's own rule: max(2, round(min(n_p, n_q) / 10)).
    """
    import mauve

    if not 0.0 < float(kmeans_explained_var) < 1.0:
        raise ValueError(f"kmeans_explained_var must be in (0, 1), got {kmeans_explained_var}")
    if num_buckets != "auto":
        num_buckets = int(num_buckets)
        if num_buckets < 2:
            raise ValueError(f"num_buckets must be 'auto' or an integer >= 2, got {num_buckets}")
        if num_buckets > len(synth) + len(real):
            raise ValueError(f"num_buckets={num_buckets} exceeds the number of points")
    out = mauve.compute_mauve(
        p_features=np.asarray(synth, dtype=np.float32),
        q_features=np.asarray(real, dtype=np.float32),
        num_buckets=num_buckets,
        pca_max_data=int(pca_max_data),
        kmeans_explained_var=float(kmeans_explained_var),
        kmeans_num_redo=int(kmeans_num_redo),
        kmeans_max_iter=int(kmeans_max_iter),
        divergence_curve_discretization_size=int(divergence_curve_discretization_size),
        mauve_scaling_factor=float(mauve_scaling_factor),
        device_id=-1,
        verbose=False,
        seed=int(seed),
    )
    return float(out.mauve)

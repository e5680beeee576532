"""MAUVE on precomputed features (no featurizer model is ever loaded)."""

from __future__ import annotations

import numpy as np

from synque.proxies.registry import register


@register("mauve", higher_is_better=True, noise="seed")
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

"""MDM: mean distance to medoid, the diversity of the synthetic set alone."""

from __future__ import annotations

import numpy as np

from synque.proxies.registry import register


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

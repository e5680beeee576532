"""Two jobs embed the same text at once: both end up with the vector stored first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synque.embed.base import CachedEmbedder, sha256_hex


class Fixed(CachedEmbedder):
    """Embeds every text as `offset + len(text)` (a job whose batches round differently)."""

    def __init__(self, cache_dir: Path, offset: float, before: Callable[[], Any] = lambda: None):
        super().__init__("fixed", cache_dir, progress=False)
        self.offset, self.before = offset, before

    def item_key(self, item: Any) -> str:
        return sha256_hex(str(item))

    def compute(self, items: list[Any]) -> np.ndarray:
        self.before()  # the other job finishes while this one computes
        return np.array([[self.offset + len(t), 1.0] for t in items], dtype=np.float32)


def test_the_job_that_stores_second_uses_the_first_jobs_vectors(tmp_path: Path) -> None:
    texts = ["a real headline", "another one"]
    first = Fixed(tmp_path, offset=0.0)
    late = Fixed(tmp_path, offset=1e-6, before=lambda: first.embed(texts))
    vectors = late.embed(texts)
    assert np.array_equal(vectors, first.embed(texts))
    assert vectors[:, 0].tolist() == [float(len(t)) for t in texts]  # not the late offsets
    assert late.stats["embedded"] == 2  # it did compute, and then deferred to the cache
    assert np.array_equal(Fixed(tmp_path, offset=5.0).embed(texts), vectors)  # a later run

"""The embedder protocol and the content-addressed cache every embedder shares.

An item (a text, or an image's bytes) is embedded once per embedder id, whatever dataset,
seed or run asks for it again: the cache is a sqlite table keyed by the sha256 of the item's
content, so warm runs never load the model at all.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from synque import SynqueError
from synque.utils.sqlite_store import SqliteStore


@runtime_checkable
class Embedder(Protocol):
    """What the stages need from an embedder."""

    #: Identity of the vectors (model and every setting that changes them): the cache key.
    id: str
    #: Counters logged by the stages (items, cache_hits, embedded, embed_seconds).
    stats: dict[str, float]

    def embed(self, items: Sequence[Any], desc: str = "embedding") -> np.ndarray: ...


class EmbeddingCache(SqliteStore):
    """sqlite store of content key -> float32 vector for one embedder id.

    The first vector stored for a key stays. Why: a vector depends, in its last bits, on
    the batch it was computed in (padding, kernel blocking), and two parallel jobs may
    compute the same real text in different batches. Each job uses what the cache holds
    after its write, so every job, and every later run, works with one vector per text.
    """

    schema = ("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)",)

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for key, blob in self.execute(
                f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk
            ):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        self.executemany(
            "INSERT OR IGNORE INTO emb (key, vec) VALUES (?, ?)",
            [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
        )


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def matrix_digest(matrix: np.ndarray) -> str:
    """Short digest of an embedding matrix: logged instead of re-uploading the matrix."""
    return hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest()[:16]


class CachedEmbedder(ABC):
    """Base of every embedder: cache lookups, chunked computing, stats and a progress bar.

    Subclasses set `self.id` and implement `item_key(item)` (a content hash) and
    `compute(items) -> [n, dim] array` for the items the cache does not hold.
    """

    #: Items computed per chunk; each chunk is committed to the cache (a crash keeps it).
    chunk_size: int = 256
    unit: str = "item"

    def __init__(self, id: str, cache_dir: Path | str, progress: bool = True) -> None:
        self.id = id
        self.progress = progress
        self.cache = EmbeddingCache(Path(cache_dir) / "embeddings" / f"{id}.sqlite")
        self.stats: dict[str, float] = {
            "items": 0,
            "cache_hits": 0,
            "embedded": 0,
            "embed_seconds": 0.0,
        }

    @abstractmethod
    def item_key(self, item: Any) -> str: ...

    @abstractmethod
    def compute(self, items: list[Any]) -> np.ndarray: ...

    def embed(self, items: Sequence[Any], desc: str = "embedding") -> np.ndarray:
        """Embeddings of `items` in order; only items this embedder never saw are computed."""
        if len(items) == 0:
            raise SynqueError(f"embedder {self.id}: nothing to embed ({desc})")
        keys = [self.item_key(item) for item in items]
        found = self.cache.get(keys)
        missing = {k: item for k, item in zip(keys, items, strict=True) if k not in found}
        self.stats["items"] += len(items)
        self.stats["cache_hits"] += len(items) - len(missing)
        if missing:
            todo_keys, todo_items = list(missing), list(missing.values())
            start = time.perf_counter()
            bar = tqdm(
                total=len(todo_items),
                desc=desc,
                unit=self.unit,
                disable=not self.progress,
                leave=False,
            )
            for lo in range(0, len(todo_items), self.chunk_size):
                vecs = self.compute(todo_items[lo : lo + self.chunk_size])
                batch = dict(zip(todo_keys[lo : lo + self.chunk_size], vecs, strict=True))
                self.cache.put(batch)
                # what the cache holds: another job may have stored these texts first
                found.update(self.cache.get(list(batch)))
                bar.update(len(batch))
            bar.close()
            self.stats["embedded"] += len(todo_items)
            self.stats["embed_seconds"] += time.perf_counter() - start
        return np.stack([found[k] for k in keys]).astype(np.float32)

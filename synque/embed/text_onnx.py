"""A sentence-transformers model exported to ONNX once, run by ONNX Runtime or OpenVINO.

Why synque exports the model itself instead of passing sentence-transformers' `backend=`:
that path goes through Hugging Face optimum, and no optimum release installs next to the
pinned transformers 5.24 (optimum-onnx needs transformers < 4.58; optimum-intel 2.2 fails
at import). Here the whole sentence-transformers pipeline after tokenising (transformer,
pooling, normalisation) is traced once with torch's TorchScript-based ONNX exporter (it needs
neither onnx nor onnxscript) and saved next to the embedding cache; tokenising stays in
Python, so `max_seq_length` and truncation are exactly the torch backend's.

OpenVINO runs in float32 (`INFERENCE_PRECISION_HINT=f32`): on CPUs with bfloat16 units its
default is bfloat16, which would make the backend a second bf16 rather than a faithful one.
Both runtimes use torch's CPU thread count, so one setting bounds every backend.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synque import SynqueError

#: Per runtime: (module to import, pip package).
RUNTIMES = {"onnx": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino")}


def require_runtime(backend: str) -> None:
    """One line naming the setting when the runtime of `backend` is not installed."""
    module, package = RUNTIMES[backend]
    if importlib.util.find_spec(module) is None:
        raise SynqueError(
            f"embedder.backend: '{backend}' needs {package}, which is not installed "
            f"(pip install {package})"
        )


def input_names(model: Any) -> list[str]:
    """The tensor inputs the model's tokenizer produces (e.g. input_ids, attention_mask)."""
    features = model.preprocess(["a"])
    return [k for k, v in features.items() if hasattr(v, "dtype") and v.dim() == 2]


def export_onnx(model: Any, path: Path) -> None:
    """Trace tokens -> sentence embedding to `path` (written to a temporary name, renamed)."""
    import torch

    names = input_names(model)

    class Pipeline(torch.nn.Module):
        """The sentence-transformers modules as a function of the token tensors."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    sample = model.preprocess(["an example sentence to trace", "a second, longer one to pad"])
    args = tuple(sample[k].cpu() for k in names)
    axes = {k: {0: "batch", 1: "tokens"} for k in names} | {"embedding": {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns about shape checks it freezes; they hold for every input here
            # (mask and tokens always have one length), and the tests compare with torch.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pipeline().to("cpu").eval(),
                args,
                str(tmp),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def open_runtime(backend: str, path: Path, names: list[str]) -> Callable[[dict], np.ndarray]:
    """A function of {input name: int64 array} -> embeddings, on the chosen runtime."""
    import torch

    threads = max(1, torch.get_num_threads())
    if backend == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)[0]
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    )
    return lambda feeds: compiled([feeds[k] for k in names])[0]


class ExportedSentenceModel:
    """Encode texts like `SentenceTransformer.encode`, with the network run by a runtime."""

    def __init__(self, model: Any, backend: str, path: Path) -> None:
        require_runtime(backend)
        self.model = model
        self.names = input_names(model)
        if not path.is_file():
            try:
                export_onnx(model, path)
            except Exception as exc:  # tracing and export errors of every kind
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                raise SynqueError(f"embedder.backend: cannot export to ONNX ({first})") from None
        self.run = open_runtime(backend, path, self.names)

    def encode(self, texts: list[str], batch_size: int, normalize: bool) -> np.ndarray:
        """Embeddings in input order; batches of similar length, as sentence-transformers."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), 0), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            idx = order[lo : lo + batch_size]
            features = self.model.preprocess([texts[i] for i in idx])
            feeds = {k: features[k].cpu().numpy().astype(np.int64) for k in self.names}
            vecs = np.asarray(self.run(feeds), dtype=np.float32)
            if out.shape[1] == 0:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

"""Text embedding backends: cache identity per backend, bfloat16 autocast, one-line errors.

The float32 torch reference must keep the cache file and key of every earlier version (so
existing caches still hit); every other backend must get a cache of its own (so vectors of
two backends never mix). The sentiment-study parity of a backend is `test_backend_parity.py`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from synque import SynqueError
from synque.components import build
from synque.embed.base import EmbeddingCache
from synque.embed.text import BACKENDS, SentenceEmbedder

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "embedder"
TEXTS = [
    "Shares of Acme jump 12% after record quarterly profit",
    "Regulator fines bank over money-laundering lapses",
    "Company keeps full-year guidance unchanged",
]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def from_config(name: str, cache: Path, **overrides: object) -> SentenceEmbedder:
    """The embedder a stage would build from `configs/embedder/<name>.yaml`."""
    node = OmegaConf.load(CONFIGS / f"{name}.yaml")
    if "defaults" in node:  # a variant: its base file, then its own keys
        base = OmegaConf.load(CONFIGS / f"{node.defaults[0]}.yaml")
        node = OmegaConf.merge(base, {k: v for k, v in node.items() if k != "defaults"})
    node = OmegaConf.merge(node, overrides)
    return build(node, "embedder", cache_dir=cache, progress=False)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_default_config_keeps_the_pre_backend_cache_file_and_key(tmp_path: Path) -> None:
    embedder = from_config("minilm", tmp_path)
    assert embedder.backend == "fp32"
    assert embedder.id == "all-MiniLM-L6-v2"
    assert embedder.cache.path == tmp_path / "embeddings" / "all-MiniLM-L6-v2.sqlite"
    assert embedder.item_key(TEXTS[0]) == hashlib.sha256(TEXTS[0].encode("utf-8")).hexdigest()


def test_a_cache_written_before_backends_still_hits_without_loading_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What an earlier version wrote: file embeddings/<model>.sqlite, key sha256(utf-8 text).
    old = EmbeddingCache(tmp_path / "embeddings" / "all-MiniLM-L6-v2.sqlite")
    rng = np.random.default_rng(0)
    stored = {hashlib.sha256(t.encode("utf-8")).hexdigest(): rng.normal(size=384) for t in TEXTS}
    old.put(stored)
    embedder = from_config("minilm", tmp_path)
    monkeypatch.setattr(embedder, "_load", lambda: pytest.fail("the model was loaded"))
    got = embedder.embed(TEXTS)
    np.testing.assert_array_equal(got, np.stack(list(stored.values())).astype(np.float32))
    assert embedder.stats["cache_hits"] == len(TEXTS) and embedder.stats["embedded"] == 0


def test_every_backend_gets_a_cache_of_its_own(tmp_path: Path) -> None:
    paths = {b: SentenceEmbedder(tmp_path, backend=b, progress=False).cache.path for b in BACKENDS}
    assert len(set(paths.values())) == len(paths) == 4
    assert paths["fp32"].name == "all-MiniLM-L6-v2.sqlite"
    assert paths["bf16"].name == "all-MiniLM-L6-v2-bf16.sqlite"
    assert paths["onnx"].name == "all-MiniLM-L6-v2-onnx.sqlite"
    normed = SentenceEmbedder(tmp_path, normalize=True, max_seq_length=64, backend="bf16")
    assert normed.id == "all-MiniLM-L6-v2-norm-len64-bf16"


def test_bfloat16_autocast_is_close_to_float32_but_not_the_same(tmp_path: Path) -> None:
    fp32 = from_config("minilm", tmp_path)
    bf16 = from_config("minilm_bf16", tmp_path)
    assert bf16.backend == "bf16" and bf16.id != fp32.id
    bf16._model = fp32._load()  # one model in memory: only the autocast differs
    a, b = fp32.embed(TEXTS), bf16.embed(TEXTS)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (3, 384)
    assert np.isfinite(b).all()
    assert cosine_rows(a, b).min() > 0.999
    assert not np.array_equal(a, b)  # autocast really ran: bf16 rounding shows
    by_hand = fp32._load().encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(a, by_hand, rtol=0, atol=1e-6)
    again = bf16.embed(TEXTS[:1])  # served from bfloat16's own cache
    np.testing.assert_array_equal(again[0], b[0])
    assert bf16.stats["cache_hits"] == 1


@pytest.mark.parametrize("backend", ["tensorrt", "torch", "float16"])
def test_an_unknown_backend_stops_with_one_line_naming_it(tmp_path: Path, backend: str) -> None:
    with pytest.raises(SynqueError) as err:
        from_config("minilm", tmp_path, backend=backend)
    message = str(err.value)
    assert message.startswith(f"embedder.backend: unknown value '{backend}'")
    assert "fp32, bf16, onnx, openvino" in message and "\n" not in message


RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_runtime_that_is_not_installed_is_named_in_one_line(tmp_path: Path, backend: str) -> None:
    if importlib.util.find_spec(RUNTIMES[backend]) is not None:
        pytest.skip(f"{RUNTIMES[backend]} is installed")
    embedder = from_config("minilm", tmp_path, backend=backend)
    with pytest.raises(SynqueError) as err:
        embedder.embed(TEXTS[:1])
    message = str(err.value)
    assert message.startswith(f"embedder.backend: '{backend}'") and "\n" not in message
    assert f"pip install {RUNTIMES[backend]}" in message


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_an_exported_runtime_gives_the_float32_vectors(tmp_path: Path, backend: str) -> None:
    if importlib.util.find_spec(RUNTIMES[backend]) is None:
        pytest.skip(f"{RUNTIMES[backend]} is not installed")
    runtime = from_config("minilm", tmp_path, backend=backend, batch_size=2)
    got = runtime.embed(TEXTS)  # exports the model once, then 2 batches of unequal lengths
    assert (tmp_path / "models" / "all-MiniLM-L6-v2.onnx").is_file()
    reference = runtime._load().encode(TEXTS, convert_to_numpy=True)  # the same torch model
    assert got.shape == reference.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)
    normed = from_config("minilm", tmp_path, backend=backend, normalize=True)
    unit = normed.embed(TEXTS[:2])  # reuses the exported file
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_the_reference_backend_keeps_hashes_and_labels(make_cfg) -> None:
    """fp32 runs logged before `backend` existed are still found; other backends stand apart."""
    from omegaconf import open_dict

    from synque.config import config_hash
    from synque.stages.common import embedder_label

    cfg = make_cfg("+experiment=sentiment_repr")
    before = cfg.copy()
    with open_dict(before):
        del before.embedder["backend"]
    assert config_hash(cfg) == config_hash(before)
    assert embedder_label(cfg) == str(cfg.embedder.model)
    onnx = make_cfg("+experiment=sentiment_repr", "embedder.backend=onnx")
    assert config_hash(onnx) != config_hash(cfg)
    assert embedder_label(onnx) == f"{cfg.embedder.model}+onnx"

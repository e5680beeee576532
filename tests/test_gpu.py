"""GPU-only checks (skipped on a CPU machine): the same code paths on CUDA agree with the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synque.components import build
from synque.train.image import ImageClassifier
from tests.fakes.images import make_image_folder
from tests.train.shapes import write_shapes

pytestmark = pytest.mark.requires_gpu


def test_image_embedder_on_cuda_matches_the_cpu(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", n_sets=1, n=8)
    paths = [str(p) for p in sorted((root / "synthetic" / "set0").rglob("*.png"))]
    node = {"_target_": "synque.embed.image_models.EfficientNetLite0Embedder", "size": 64}
    cpu = build({**node, "device": "cpu"}, "embedder", cache_dir=tmp_path / "a", progress=False)
    gpu = build({**node, "device": "cuda"}, "embedder", cache_dir=tmp_path / "b", progress=False)
    np.testing.assert_allclose(gpu.embed(paths), cpu.embed(paths), rtol=1e-2, atol=1e-3)


def test_small_cnn_trains_on_the_gpu(tmp_path: Path) -> None:
    train = write_shapes(tmp_path / "train", 120, size=24, seed=0)
    test = write_shapes(tmp_path / "test", 40, size=24, seed=1)
    trainer = ImageClassifier(
        arch="small_cnn",
        image_size=24,
        batch_size=32,
        lr=1e-3,
        weight_decay=0.0,
        max_epochs=5,
        min_epochs=1,
        patience=2,
        val_fraction=0.1,
        augment=False,
        accelerator="gpu",
        precision="bf16-mixed",
        threads=1,
    )
    result = trainer.fit_evaluate(train, test, seed=0)
    assert result.device.startswith("cuda")
    assert result.metrics["top1"] > 0.7

"""Image training: MRR by hand, image reading, and a small CNN that learns generated shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from synque import SynqueError
from synque.components import build
from synque.train.image import ImageClassifier, load_images, rank_metrics
from tests.train.shapes import write_shapes


def test_mrr_and_top1_by_hand() -> None:
    scores = np.array(
        [
            [0.1, 0.7, 0.2],  # true 0 ranks 3rd: 1/3
            [0.5, 0.3, 0.2],  # true 0 ranks 1st: 1
            [0.2, 0.3, 0.5],  # a class never trained: 0
            [0.4, 0.4, 0.1],  # true 1 ties class 0: ranked 2nd (ties count against it): 1/2
        ]
    )
    got = rank_metrics(scores, [0, 0, -1, 1])
    assert got["mrr"] == pytest.approx((1 / 3 + 1 + 0 + 1 / 2) / 4)  # 11/24
    assert got["top1"] == pytest.approx(1 / 4)


def test_constant_scores_get_no_credit() -> None:
    got = rank_metrics(np.zeros((5, 4)), [0, 1, 2, 3, 0])
    assert got == {"mrr": pytest.approx(1 / 4), "top1": 0.0}
    nan = rank_metrics(np.full((2, 2), np.nan), [0, 1])
    assert nan["mrr"] == pytest.approx(0.5)


def test_grey_palette_and_transparent_images_load_as_rgb(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 8), 77).save(grey)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # left half: transparent red
    rgba.paste((0, 0, 255, 255), (4, 0, 8, 8))  # right half: opaque blue
    rgba.save(tmp_path / "rgba.png")
    Image.new("P", (8, 8), 0).save(tmp_path / "palette.png")
    Image.new("LA", (8, 8), (10, 255)).save(tmp_path / "grey_alpha.png")
    paths = [str(tmp_path / n) for n in ("grey.png", "rgba.png", "palette.png", "grey_alpha.png")]

    pixels = load_images(paths, size=8, threads=2)
    assert pixels.shape == (4, 3, 8, 8) and pixels.dtype == torch.uint8
    assert (pixels[0] == 77).all()
    assert (pixels[1, :, :, :4] == 255).all()  # transparent pixels show the white background
    assert pixels[1, :, 0, 7].tolist() == [0, 0, 255]
    assert (pixels[3] == 10).all()
    assert load_images(paths[:1], size=16).shape == (1, 3, 16, 16)  # stretched to the size


def test_unreadable_image_is_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SynqueError, match="broken.png"):
        load_images([str(bad)], size=8)


def test_small_cnn_config_inherits_resnet50(train_config) -> None:
    small, resnet = train_config("small_cnn"), train_config("resnet50")
    assert small["_target_"] == resnet["_target_"]
    assert (small["arch"], resnet["arch"]) == ("small_cnn", "resnet50")
    assert small["min_epochs"] == resnet["min_epochs"] >= 10
    assert small["threads"] == resnet["threads"] == 1
    with pytest.raises(SynqueError, match="train.arch='vgg'"):
        build(train_config("resnet50", arch="vgg"), "train")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    root = tmp_path_factory.mktemp("shapes")
    train = write_shapes(root / "train", 240, size=24, seed=0)
    return train, write_shapes(root / "test", 100, size=24, seed=1)


def test_small_cnn_learns_two_shapes(make_trainer, shapes) -> None:
    train, test = shapes
    calls: list[tuple[dict[str, float], int]] = []
    trainer = make_trainer("small_cnn", image_size=24, max_epochs=10, min_epochs=6, patience=2)
    assert isinstance(trainer, ImageClassifier)
    result = trainer.fit_evaluate(
        train, test, seed=0, metrics_callback=lambda m, e: calls.append((m, e))
    )
    # chance: top-1 0.5, MRR 0.75
    assert result.metrics["top1"] >= 0.8
    assert result.metrics["mrr"] >= 0.9
    assert result.task_performance == result.metrics["mrr"]
    assert result.params == {"n_train": 216, "n_val": 24, "n_test": 100}
    assert 6 <= result.metrics["epochs"] <= 10 and len(calls) == result.metrics["epochs"]
    assert set(calls[0][0]) == {"train_loss", "val_loss", "val_mrr", "val_top1"}
    best = min(range(len(calls)), key=lambda e: calls[e][0]["val_loss"])
    assert result.metrics["best_epoch"] == best
    assert result.metrics["best_val_loss"] == pytest.approx(calls[best][0]["val_loss"])
    assert result.device == "cpu"


def test_test_labels_never_trained_count_as_wrong(make_trainer, shapes, tmp_path: Path) -> None:
    train, _ = shapes
    triangles = write_shapes(tmp_path, 6, shapes=("triangle",), seed=2)
    trainer = make_trainer("small_cnn", image_size=24, max_epochs=1, min_epochs=1)
    result = trainer.fit_evaluate(train.head(40), triangles, seed=0)
    assert result.metrics["mrr"] == 0.0 and result.metrics["top1"] == 0.0


def test_resnet50_trains_from_scratch_on_tiny_images(make_trainer, shapes) -> None:
    train, test = shapes
    trainer = make_trainer(
        "resnet50", image_size=32, batch_size=8, max_epochs=1, min_epochs=1, augment=True
    )
    result = trainer.fit_evaluate(train.head(26), test.head(10), seed=0)
    assert result.params == {"n_train": 23, "n_val": 3, "n_test": 10}
    assert result.metrics["epochs"] == 1
    assert 0.5 <= result.metrics["mrr"] <= 1.0  # two classes: the true one ranks 1st or 2nd

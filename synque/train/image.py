"""Downstream performance of an image candidate set: a classifier trained from scratch on it.

The paper's recipe (`train=resnet50`): torchvision's ResNet-50 without pretrained weights,
10% of the synthetic set held out (stratified, seeded) for early stopping on validation loss,
at least `min_epochs` epochs, and the best validation epoch's weights tested on the real test
set. The score is the test MRR: the mean over test images of 1 / (rank of the true class in
the model's ranking of the training classes); `top1` is logged beside it. A test label that
never appears in training counts as wrong (reciprocal rank 0). `train=small_cnn` is a
three-block CNN for the CPU and tiny images (digits, smoke tests).

Images are read once per fit with Pillow (grey, palette and RGBA turned into RGB the way the
image embedders see them), stretched to `image_size` square and kept in memory as uint8
(150 KB per image at 224 px); scaling to floats and normalising happen on the device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightning.pytorch as lightning
import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from synque.data.images import read_image, resize_square
from synque.train.base import (
    MetricsCallback,
    SupervisedTrainer,
    TrainResult,
    check_fit_options,
    require,
    validation_split,
)
from synque.train.fitting import EarlyStoppingFit, predict_logits

log = logging.getLogger(__name__)

ARCHS = ("resnet50", "small_cnn")
# ImageNet channel statistics: the usual input scale for torchvision's architectures.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def rank_metrics(scores: np.ndarray, true_index: Sequence[int]) -> dict[str, float]:
    """MRR and top-1 of the true class in each row's ranking of the classes (best first).

    `true_index[i] = -1` marks a class the model has no output for: reciprocal rank 0. Ties
    count against the true class (rank = 1 + classes scoring at least as high), so a model
    that scores every class alike gets no credit.
    """
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    true = np.asarray(true_index, dtype=np.int64)
    if scores.ndim != 2 or len(true) != len(scores):
        raise ValueError(f"scores {scores.shape} do not match {len(true)} true classes")
    known = true >= 0
    reciprocal = np.zeros(len(true))
    rows = np.flatnonzero(known)
    if len(rows):
        true_score = scores[rows, true[rows]]
        at_least = (scores[rows] >= true_score[:, None]).sum(axis=1)  # includes the class itself
        reciprocal[rows] = 1.0 / at_least
    return {"mrr": float(reciprocal.mean()), "top1": float((reciprocal == 1.0).mean())}


def load_images(paths: Sequence[str], size: int, threads: int = 1) -> Tensor:
    """uint8 tensor [n, 3, size, size] of the images at `paths` (decoded in `threads`)."""

    def one(path: str) -> np.ndarray:
        return resize_square(read_image(path), size, "bilinear")

    with ThreadPoolExecutor(max(1, threads)) as pool:  # Pillow decodes outside the GIL
        arrays = list(pool.map(one, paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def small_cnn(n_classes: int, width: int = 32) -> nn.Module:
    """Three conv-BN-ReLU-pool blocks and a linear head: seconds per epoch on a CPU."""
    layers: list[nn.Module] = []
    channels = [3, width, 2 * width, 4 * width]
    for c_in, c_out in zip(channels, channels[1:], strict=False):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], n_classes)]
    return nn.Sequential(*layers, *head)


def build_network(arch: str, n_classes: int) -> nn.Module:
    if arch == "resnet50":
        return torchvision.models.resnet50(weights=None, num_classes=n_classes)
    return small_cnn(n_classes)


class _Images(Dataset):
    """In-memory uint8 images with class indices; optional per-image augmentation."""

    def __init__(self, images: Tensor, labels: Tensor, augment: Any = None) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = self.images[i]
        return (self.augment(image) if self.augment else image), self.labels[i]


class _ImageModule(lightning.LightningModule):
    """A network over normalised images; validation loss, MRR and top-1 per epoch."""

    def __init__(self, network: nn.Module, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.network = network
        self.lr, self.weight_decay = lr, weight_decay
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self._val: list[tuple[Tensor, Tensor]] = []

    def forward(self, images: Tensor) -> Tensor:
        return self.network((images.float() / 255.0 - self.mean) / self.std)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, y = batch
        loss = F.cross_entropy(self(images), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, y = batch
        self._val.append((self(images).float().cpu(), y.cpu()))

    def on_validation_epoch_end(self) -> None:
        logits = torch.cat([s for s, _ in self._val])
        y = torch.cat([t for _, t in self._val])
        self._val.clear()
        scores = rank_metrics(logits.numpy(), y.tolist())
        self.log("val_loss", float(F.cross_entropy(logits, y)), prog_bar=True)
        self.log("val_mrr", scores["mrr"])
        self.log("val_top1", scores["top1"])

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class ImageClassifier(SupervisedTrainer):
    """ResNet-50 (or a small CNN) from scratch on a candidate set; scored by test MRR."""

    native_metric = "mrr"
    modality = "image"
    input_column = "image"

    def __init__(
        self,
        *,
        arch: str,
        image_size: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        max_epochs: int,
        min_epochs: int,
        patience: int,
        val_fraction: float,
        augment: bool,
        accelerator: str,
        precision: str,
        threads: int,
        progress: bool = False,
    ) -> None:
        super().__init__()
        require(arch in ARCHS, "arch", arch, f"unknown (have: {', '.join(ARCHS)})")
        require(image_size >= 8, "image_size", image_size, "must be >= 8 pixels")
        require(batch_size >= 2, "batch_size", batch_size, "must be >= 2 (batch norm)")
        require(
            0 <= min_epochs <= max_epochs, "min_epochs", min_epochs, "must be in [0, max_epochs]"
        )
        check_fit_options(lr, max_epochs, patience, val_fraction)
        require(threads >= 1, "threads", threads, "must be >= 1")
        self.arch = arch
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.max_epochs, self.min_epochs = int(max_epochs), int(min_epochs)
        self.patience = int(patience)
        self.val_fraction = float(val_fraction)
        self.augment = bool(augment)
        self.accelerator, self.precision = str(accelerator), str(precision)
        self.threads = int(threads)
        self.progress = progress
        self._test_pixels: tuple[tuple[str, ...], Tensor] | None = None

    def run_tags(self) -> dict[str, str]:
        return {**super().run_tags(), "arch": self.arch}

    def _pixels(self, paths: list[str], reuse: bool = False) -> Tensor:
        """Decoded images; the test set (the same for every candidate of a group) once."""
        key = tuple(paths)
        if reuse and self._test_pixels is not None and self._test_pixels[0] == key:
            return self._test_pixels[1]
        pixels = load_images(paths, self.image_size, self.threads)
        if reuse:
            self._test_pixels = (key, pixels)
        return pixels

    def _augmentation(self) -> Any:
        """Random crop of the padded image and a horizontal flip, per image, when enabled."""
        if not self.augment:
            return None
        pad = max(1, self.image_size // 8)
        return v2.Compose(
            [
                v2.RandomCrop(self.image_size, padding=pad, padding_mode="reflect"),
                v2.RandomHorizontalFlip(),
            ]
        )

    def _fit_evaluate(
        self,
        train: pl.DataFrame,
        test: pl.DataFrame,
        seed: int,
        metrics_callback: MetricsCallback | None,
    ) -> TrainResult:
        labels = train["label"].cast(pl.String).to_list()
        classes = sorted(set(labels))
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[c] for c in labels], dtype=torch.long)
        fit_idx, val_idx = validation_split(labels, self.val_fraction, seed)
        pixels = self._pixels(train["image"].to_list())
        test_pixels = self._pixels(test["image"].to_list(), reuse=True)
        fit_set = _Images(pixels[fit_idx], y[fit_idx], self._augmentation())
        val_set = _Images(pixels[val_idx], y[val_idx])
        test_set = _Images(test_pixels, torch.zeros(len(test_pixels), dtype=torch.long))

        lightning.seed_everything(seed, workers=True, verbose=False)
        with EarlyStoppingFit(
            monitor="val_loss",
            mode="min",
            patience=self.patience,
            max_epochs=self.max_epochs,
            min_epochs=self.min_epochs,
            validation=len(val_set) > 0,
            accelerator=self.accelerator,
            precision=self.precision,
            threads=self.threads,
            progress=self.progress,
            metrics_callback=metrics_callback,
        ) as fit:
            model = _ImageModule(build_network(self.arch, len(classes)), self.lr, self.weight_decay)
            shuffle = torch.Generator().manual_seed(seed)
            outcome = fit.run(
                model,
                DataLoader(
                    fit_set,
                    self.batch_size,
                    shuffle=True,
                    generator=shuffle,
                    # a last batch of one image breaks batch norm at ResNet's 1x1 stage
                    drop_last=len(fit_set) > self.batch_size,
                ),
                DataLoader(val_set, self.batch_size) if len(val_set) else None,
            )
            logits = predict_logits(model, DataLoader(test_set, self.batch_size), fit.device)

        true = [index.get(c, -1) for c in test["label"].cast(pl.String).to_list()]
        scores = rank_metrics(logits.numpy(), true)
        metrics = {
            "task_performance": scores["mrr"],
            **scores,
            "best_val_loss": outcome.best_score,
            "best_epoch": float(outcome.best_epoch),
            "epochs": float(outcome.epochs),
        }
        params = {"n_train": len(fit_set), "n_val": len(val_set), "n_test": len(test_set)}
        log.debug("trained %s: %s", self.arch, metrics)
        return TrainResult(metrics=metrics, params=params, device=outcome.device)

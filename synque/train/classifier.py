"""Downstream performance of a text candidate set: train a text classifier on it, test on real data.

The score is the macro-F1, on the labeled real test set, of a classifier trained only on the
candidate's synthetic examples. Two modes share one Lightning module: `finetune` trains
encoder + linear head (the paper's setting); `probe` keeps the encoder frozen, embeds every text
once and trains only the head (much cheaper, a rougher estimate). A share of the synthetic set
is held out for early stopping on validation macro-F1; the best epoch's weights are tested.
Every setting comes from `configs/train/classifier.yaml` (`probe.yaml` states what differs).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import lightning.pytorch as lightning
import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from synque import SynqueError
from synque.embed.text import packaged_model_path
from synque.train.base import (
    MetricsCallback,
    SupervisedTrainer,
    TrainResult,
    check_fit_options,
    holdout_split,
    require,
    validation_split,
)
from synque.train.fitting import EarlyStoppingFit, predict_logits

log = logging.getLogger(__name__)

Batch = tuple[dict[str, Tensor], Tensor]
MODES = ("finetune", "probe")
LR_SCHEDULES = ("linear", "constant")
_ENCODE_BATCH = 128


@dataclass(frozen=True)
class _Optimizer:
    """What `configure_optimizers` needs from the settings."""

    lr: float
    weight_decay: float
    lr_schedule: str
    warmup_ratio: float


class TextClassifier(SupervisedTrainer):
    """Fine-tuned encoder (or frozen-encoder probe) + linear head; scored by macro-F1."""

    native_metric = "f1_macro"
    modality = "text"
    input_column = "text"

    def __init__(
        self,
        *,
        mode: str,
        backbone: str,
        max_length: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        lr_schedule: str,
        warmup_ratio: float,
        max_epochs: int,
        patience: int,
        val_fraction: float,
        max_train_examples: int | None,
        accelerator: str,
        progress: bool = False,
    ) -> None:
        super().__init__()
        require(mode in MODES, "mode", mode, f"unknown (have: {', '.join(MODES)})")
        require(max_length >= 2, "max_length", max_length, "must be >= 2")
        require(batch_size >= 1, "batch_size", batch_size, "must be >= 1")
        check_fit_options(lr, max_epochs, patience, val_fraction)
        require(0.0 <= warmup_ratio < 1.0, "warmup_ratio", warmup_ratio, "must be in [0, 1)")
        require(
            lr_schedule in LR_SCHEDULES,
            "lr_schedule",
            lr_schedule,
            f"unknown (have: {', '.join(LR_SCHEDULES)})",
        )
        require(
            max_train_examples is None or max_train_examples >= 2,
            "max_train_examples",
            max_train_examples,
            "must be >= 2 or null",
        )
        self.mode = mode
        self.backbone = backbone
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.val_fraction = float(val_fraction)
        self.max_train_examples = max_train_examples
        self.accelerator = accelerator
        self.progress = progress
        self.optimizer = _Optimizer(float(lr), float(weight_decay), lr_schedule, warmup_ratio)

    def run_tags(self) -> dict[str, str]:
        return {**super().run_tags(), "backbone": self.backbone}

    def _fit_evaluate(
        self,
        train: pl.DataFrame,
        test: pl.DataFrame,
        seed: int,
        metrics_callback: MetricsCallback | None,
    ) -> TrainResult:
        texts = train["text"].cast(pl.String).to_list()
        labels = np.array(train["label"].cast(pl.String).to_list(), dtype=object)
        test_texts = test["text"].cast(pl.String).to_list()
        test_y = test["label"].cast(pl.String).to_list()
        all_labels = sorted(set(labels.tolist()) | set(test_y))

        cap = self.max_train_examples
        if cap is not None and cap < len(texts):
            keep, _ = holdout_split(labels, len(texts) - cap, seed)
            texts, labels = [texts[i] for i in keep], labels[keep]
        classes = sorted(set(labels.tolist()))
        if len(classes) < 2:
            raise SynqueError(
                f"train.max_train_examples={cap}: leaves fewer than 2 training classes"
            )
        fit_idx, val_idx = validation_split(labels, self.val_fraction, seed)
        index = {c: i for i, c in enumerate(classes)}
        fit_texts, val_texts = [texts[i] for i in fit_idx], [texts[i] for i in val_idx]
        fit_y, val_y = [index[labels[i]] for i in fit_idx], [index[labels[i]] for i in val_idx]

        lightning.seed_everything(seed, workers=True, verbose=False)
        with EarlyStoppingFit(
            monitor="val_f1_macro",
            mode="max",
            patience=self.patience,
            max_epochs=self.max_epochs,
            validation=bool(val_texts),
            accelerator=self.accelerator,
            progress=self.progress,
            metrics_callback=metrics_callback,
        ) as fit:
            tokenizer, encoder = _load_backbone(packaged_model_path(self.backbone))
            encoder = copy.deepcopy(encoder)
            dim = int(encoder.config.hidden_size)
            collate: Callable[[list[tuple[Any, int]]], Batch]
            inputs: tuple[Sequence[Any], Sequence[Any], Sequence[Any]]
            if self.mode == "probe":
                encoder.to(fit.device).eval()
                embed = _embedder(encoder, tokenizer, self.max_length, fit.device, self.progress)
                inputs = (embed(fit_texts), embed(val_texts), embed(test_texts))
                model = _Classifier(None, dim, len(classes), self.optimizer)
                del encoder
                collate = _collate_embeddings
            else:
                inputs = (fit_texts, val_texts, test_texts)
                model = _Classifier(encoder, dim, len(classes), self.optimizer)
                collate = _TokenCollate(tokenizer, self.max_length)
            fit_set = list(zip(inputs[0], fit_y, strict=True))
            val_set = list(zip(inputs[1], val_y, strict=True))
            test_set = [(x, 0) for x in inputs[2]]  # test labels never reach the model
            shuffle = torch.Generator().manual_seed(seed)
            outcome = fit.run(
                model,
                DataLoader(
                    fit_set, self.batch_size, shuffle=True, collate_fn=collate, generator=shuffle
                ),
                DataLoader(val_set, self.batch_size, collate_fn=collate) if val_set else None,
            )
            test_loader = DataLoader(test_set, _ENCODE_BATCH, collate_fn=collate)
            pred_idx = predict_logits(model, test_loader, fit.device).argmax(-1).tolist()

        pred = [classes[i] for i in pred_idx]
        per_class = f1_score(test_y, pred, labels=all_labels, average=None, zero_division=0)
        f1 = float(f1_score(test_y, pred, labels=all_labels, average="macro", zero_division=0))
        metrics = {
            "task_performance": f1,
            "f1_macro": f1,
            "accuracy": float(accuracy_score(test_y, pred)),
            "best_val_f1": outcome.best_score,
            "epochs": float(outcome.epochs),
            **{f"f1.{c}": float(v) for c, v in zip(all_labels, per_class, strict=True)},
        }
        params = {"n_train": len(fit_set), "n_val": len(val_set), "n_test": len(test_set)}
        log.debug("trained %s classifier: %s", self.mode, metrics)
        return TrainResult(metrics=metrics, params=params, device=outcome.device)


@lru_cache(maxsize=2)
def _load_backbone(path: str) -> tuple[Any, nn.Module]:
    """Tokenizer + encoder, read once per process: callers deep-copy the encoder before use."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # mean pooling replaces it; unused weights would get no gradient
    return tokenizer, encoder


def _mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of the token states over real tokens (padding excluded), as sentence-transformers."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class _TokenCollate:
    """Tokenize per batch: padding to the longest text in the batch, not to max_length."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, batch: list[tuple[str, int]]) -> Batch:
        texts, labels = zip(*batch, strict=True)
        encoded = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return dict(encoded), torch.tensor(labels, dtype=torch.long)


def _collate_embeddings(batch: list[tuple[Tensor, int]]) -> Batch:
    vectors, labels = zip(*batch, strict=True)
    return {"embeddings": torch.stack(vectors)}, torch.tensor(labels, dtype=torch.long)


def _embedder(
    encoder: nn.Module, tokenizer: Any, max_length: int, device: torch.device, progress: bool
) -> Callable[[list[str]], list[Tensor]]:
    """Frozen-encoder embedding of texts (CPU tensors), so a probe encodes each text once."""
    collate = _TokenCollate(tokenizer, max_length)

    @torch.no_grad()
    def embed(texts: list[str]) -> list[Tensor]:
        out: list[Tensor] = []
        starts = range(0, len(texts), _ENCODE_BATCH)
        for i in tqdm(starts, desc="embed", unit="batch", disable=not progress, leave=False):
            inputs, _ = collate([(t, 0) for t in texts[i : i + _ENCODE_BATCH]])
            inputs = {k: v.to(device) for k, v in inputs.items()}
            hidden = encoder(**inputs).last_hidden_state
            out.extend(_mean_pool(hidden, inputs["attention_mask"]).float().cpu())
        return out

    return embed


class _Classifier(lightning.LightningModule):
    """Linear head over mean-pooled encoder states, or over precomputed ones (encoder=None)."""

    def __init__(
        self, encoder: nn.Module | None, dim: int, n_classes: int, optimizer: _Optimizer
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(dim, n_classes)
        self.optim = optimizer
        self._val_true: list[Tensor] = []
        self._val_pred: list[Tensor] = []

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        if self.encoder is None:
            features = inputs["embeddings"]
        else:
            hidden = self.encoder(**inputs).last_hidden_state
            features = _mean_pool(hidden, inputs["attention_mask"])
        return self.head(features)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, y = batch
        loss = F.cross_entropy(self(inputs), y)
        # the epoch's mean loss, weighted by batch size: the curve the stage logs
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, y = batch
        self._val_pred.append(self(inputs).argmax(-1).cpu())
        self._val_true.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        true = torch.cat(self._val_true).numpy()
        pred = torch.cat(self._val_pred).numpy()
        self._val_true.clear()
        self._val_pred.clear()
        # classes absent from validation (tiny sets) would only add meaningless zeros
        f1 = f1_score(true, pred, labels=np.unique(true), average="macro", zero_division=0)
        self.log("val_f1_macro", float(f1), prog_bar=True)
        self.log("val_accuracy", float(accuracy_score(true, pred)))

    def configure_optimizers(self) -> Any:
        # no weight decay on biases and LayerNorm weights (the 1-D parameters), as usual for BERT
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.optim.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.optim.lr)
        if self.optim.lr_schedule == "constant":
            return optimizer
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(total * self.optim.warmup_ratio)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(total - warmup, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

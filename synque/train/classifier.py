"""Downstream performance of one synthetic set: train a text classifier on it, test on real data.

This is what the `train` stage measures when `train.source=trained`: the macro-F1 on the labeled
real test set of a classifier trained only on the candidate's synthetic examples. Two modes share
one Lightning module: `finetune` trains encoder + linear head (the paper's setting); `probe` keeps
the encoder frozen, embeds every text once and trains only the head (much cheaper, a rougher
estimate). 10% of the synthetic set is held out for early stopping on validation macro-F1; the
best epoch's weights, kept in memory, are the ones tested.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from synque.embed.text import packaged_model_path

log = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]
Batch = tuple[dict[str, Tensor], Tensor]

MODES = ("finetune", "probe")
# Defaults per mode for keys a config leaves out: a probe trains one linear layer, so it takes a
# larger lr and more (very cheap) epochs than fine-tuning the whole encoder.
_MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "finetune": {"lr": 5.0e-5, "max_epochs": 3, "warmup_ratio": 0.1},
    "probe": {"lr": 1.0e-3, "max_epochs": 30, "warmup_ratio": 0.0},
}
_DEFAULTS: dict[str, Any] = {
    "backbone": "all-MiniLM-L6-v2",
    "max_length": 64,
    "batch_size": 32,
    "weight_decay": 0.01,
    "patience": 2,
    "val_fraction": 0.1,
    "max_train_examples": None,
    "accelerator": "auto",
    "lr_schedule": "linear",
}
# Lightning hints that do not apply to in-memory data of a few thousand short texts.
_NOISE = (
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*GPU available but not used.*",
    r".*defined a `validation_step` but have no `val_dataloader`.*",  # val_fraction: 0
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning vs this torch; harmless
)
_ENCODE_BATCH = 128


@dataclass
class TrainResult:
    """Test-set scores of one trained classifier, plus what it took to get them."""

    f1_macro: float
    accuracy: float
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    seconds: float
    device: str
    best_val_f1: float
    per_class_f1: dict[str, float]


@dataclass(frozen=True)
class _Options:
    """The `train` config group, typed and checked once, with per-mode defaults."""

    mode: str
    backbone: str
    max_length: int
    batch_size: int
    lr: float
    weight_decay: float
    max_epochs: int
    patience: int
    val_fraction: float
    max_train_examples: int | None
    accelerator: str
    warmup_ratio: float
    lr_schedule: str

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> _Options:
        mode = str(cfg.get("mode", "finetune"))
        if mode not in MODES:
            raise ValueError(f"train.mode '{mode}' unknown (have: {', '.join(MODES)})")
        merged = {**_DEFAULTS, **_MODE_DEFAULTS[mode]}
        merged.update({k: cfg[k] for k in merged if k in cfg and cfg[k] is not None})
        cap = cfg.get("max_train_examples")
        opts = cls(
            mode=mode,
            backbone=str(merged["backbone"]),
            max_length=int(merged["max_length"]),
            batch_size=int(merged["batch_size"]),
            lr=float(merged["lr"]),
            weight_decay=float(merged["weight_decay"]),
            max_epochs=int(merged["max_epochs"]),
            patience=int(merged["patience"]),
            val_fraction=float(merged["val_fraction"]),
            max_train_examples=None if cap is None else int(cap),
            accelerator=str(merged["accelerator"]),
            warmup_ratio=float(merged["warmup_ratio"]),
            lr_schedule=str(merged["lr_schedule"]),
        )
        opts.check()
        return opts

    def check(self) -> None:
        problems = [
            f"{key}={getattr(self, key)} must be >= {low}"
            for key, low in (("max_length", 2), ("batch_size", 1), ("max_epochs", 1))
            if getattr(self, key) < low
        ]
        if self.patience < 0:
            problems.append(f"patience={self.patience} must be >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.max_train_examples is not None and self.max_train_examples < 2:
            problems.append(f"max_train_examples={self.max_train_examples} must be >= 2 or null")
        if self.lr_schedule not in ("linear", "constant"):
            problems.append(f"lr_schedule '{self.lr_schedule}' unknown (have: linear, constant)")
        if problems:
            raise ValueError(f"train config: {'; '.join(problems)}")


def train_text_classifier(
    train_texts: list[str],
    train_labels: list[str],
    test_texts: list[str],
    test_labels: list[str],
    cfg: Mapping[str, Any],
    seed: int,
    progress: bool = True,
    metrics_callback: MetricsCallback | None = None,
) -> TrainResult:
    """Train on the synthetic set, test on the real one; macro-F1 over train ∪ test labels.

    `cfg` is the `train` config group (dict or DictConfig). Labels are compared as strings, so a
    test label never seen in training counts, with F1 0. `metrics_callback(metrics, epoch)` gets
    `train_loss`, `val_f1_macro` and `val_accuracy` after every epoch.
    """
    start = time.perf_counter()
    _check_inputs(train_texts, train_labels, test_texts, test_labels)
    opts = _Options.from_cfg(cfg)
    texts = [str(t) for t in train_texts]
    labels = np.array([str(y) for y in train_labels], dtype=object)
    test_y = [str(y) for y in test_labels]
    all_labels = sorted(set(labels.tolist()) | set(test_y))

    if opts.max_train_examples is not None and opts.max_train_examples < len(texts):
        keep, _ = _holdout(labels, len(texts) - opts.max_train_examples, seed)
        texts, labels = [texts[i] for i in keep], labels[keep]
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(
            f"max_train_examples={opts.max_train_examples} leaves fewer than 2 training classes"
        )
    n_val = min(len(texts) - 1, math.ceil(opts.val_fraction * len(texts)))
    fit_idx, val_idx = _holdout(labels, n_val, seed)
    index = {c: i for i, c in enumerate(classes)}
    fit_texts, val_texts = [texts[i] for i in fit_idx], [texts[i] for i in val_idx]
    fit_y, val_y = [index[labels[i]] for i in fit_idx], [index[labels[i]] for i in val_idx]
    test_texts = [str(t) for t in test_texts]
    test_dummy = [0] * len(test_texts)  # test labels never reach the model

    with _quiet(progress), tempfile.TemporaryDirectory(prefix="synque-train-") as workdir:
        pl.seed_everything(seed, workers=True, verbose=progress)
        tracker = _EpochTracker(metrics_callback)
        callbacks: list[Callback] = [tracker]
        if val_texts:
            callbacks.append(
                EarlyStopping(monitor="val_f1_macro", mode="max", patience=opts.patience)
            )
        trainer = pl.Trainer(
            accelerator=opts.accelerator,
            devices=1,
            max_epochs=opts.max_epochs,
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=progress,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            deterministic="warn",
            default_root_dir=workdir,
        )
        device = trainer.strategy.root_device
        tokenizer, encoder = _load_backbone(packaged_model_path(opts.backbone))
        encoder = copy.deepcopy(encoder)
        dim = int(encoder.config.hidden_size)
        collate: Callable[[list[tuple[Any, int]]], Batch]
        inputs: tuple[Sequence[Any], Sequence[Any], Sequence[Any]]
        if opts.mode == "probe":
            encoder.to(device).eval()
            embed = _embedder(encoder, tokenizer, opts.max_length, device, progress)
            inputs = (embed(fit_texts), embed(val_texts), embed(test_texts))
            model = _Classifier(None, dim, len(classes), opts)
            del encoder
            collate = _collate_embeddings
        else:
            inputs = (fit_texts, val_texts, test_texts)
            model = _Classifier(encoder, dim, len(classes), opts)
            collate = _TokenCollate(tokenizer, opts.max_length)
        fit = list(zip(inputs[0], fit_y, strict=True))
        val = list(zip(inputs[1], val_y, strict=True))
        test = list(zip(inputs[2], test_dummy, strict=True))
        model.train()  # from_pretrained returns eval mode; Lightning keeps modes as it finds them
        shuffle = torch.Generator().manual_seed(seed)
        trainer.fit(
            model,
            train_dataloaders=DataLoader(
                fit, opts.batch_size, shuffle=True, collate_fn=collate, generator=shuffle
            ),
            val_dataloaders=DataLoader(val, opts.batch_size, collate_fn=collate) if val else None,
        )
        if tracker.best_state is not None:
            model.load_state_dict(tracker.best_state)
        pred_idx = _predict(model, DataLoader(test, _ENCODE_BATCH, collate_fn=collate), device)

    pred = [classes[i] for i in pred_idx]
    per_class = f1_score(test_y, pred, labels=all_labels, average=None, zero_division=0)
    result = TrainResult(
        f1_macro=float(f1_score(test_y, pred, labels=all_labels, average="macro", zero_division=0)),
        accuracy=float(accuracy_score(test_y, pred)),
        n_train=len(fit),
        n_val=len(val),
        n_test=len(test),
        epochs=tracker.epochs,
        seconds=time.perf_counter() - start,
        device=str(device),
        best_val_f1=tracker.best_f1 if val else float("nan"),
        per_class_f1={c: float(f) for c, f in zip(all_labels, per_class, strict=True)},
    )
    log.debug("trained %s classifier: %s", opts.mode, result)
    return result


def _check_inputs(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    test_texts: Sequence[str],
    test_labels: Sequence[str],
) -> None:
    """Fail early, in one line, on input that would otherwise break deep inside training."""
    for name, seq in (("train_texts", train_texts), ("test_texts", test_texts)):
        if len(seq) == 0:
            raise ValueError(f"{name} is empty")
    for kind, texts, labels in (
        ("train", train_texts, train_labels),
        ("test", test_texts, test_labels),
    ):
        if len(texts) != len(labels):
            raise ValueError(f"{kind}: {len(texts)} texts but {len(labels)} labels")
    n_classes = len({str(y) for y in train_labels})
    if n_classes < 2:
        raise ValueError(f"training labels hold {n_classes} class; a classifier needs at least 2")


def _holdout(labels: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (keep, holdout) index split, stratified when every class fits on both sides."""
    idx = np.arange(len(labels))
    if n_holdout <= 0:
        return idx, idx[:0]
    _, counts = np.unique(labels.astype(str), return_counts=True)
    k = len(counts)
    feasible = counts.min() >= 2 and k <= n_holdout <= len(labels) - k
    keep, hold = train_test_split(
        idx, test_size=n_holdout, random_state=seed, stratify=labels if feasible else None
    )
    return np.sort(keep), np.sort(hold)


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


@torch.no_grad()
def _predict(model: nn.Module, loader: DataLoader, device: torch.device) -> list[int]:
    """Class indices for a loader, on the training device (Lightning moves the model off it)."""
    model.to(device).eval()
    out: list[int] = []
    for inputs, _ in loader:
        logits = model({k: v.to(device) for k, v in inputs.items()})
        out.extend(logits.argmax(-1).tolist())
    model.cpu()
    return out


class _Classifier(pl.LightningModule):
    """Linear head over mean-pooled encoder states, or over precomputed ones (encoder=None)."""

    def __init__(self, encoder: nn.Module | None, dim: int, n_classes: int, opts: _Options) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(dim, n_classes)
        self.opts = opts
        self._loss_sum = torch.zeros(())
        self._loss_n = 0
        self._val_true: list[Tensor] = []
        self._val_pred: list[Tensor] = []

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        if self.encoder is None:
            features = inputs["embeddings"]
        else:
            hidden = self.encoder(**inputs).last_hidden_state
            features = _mean_pool(hidden, inputs["attention_mask"])
        return self.head(features)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_n = 0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, y = batch
        loss = F.cross_entropy(self(inputs), y)
        self._loss_sum = self._loss_sum + loss.detach() * len(y)
        self._loss_n += len(y)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def epoch_loss(self) -> float:
        """Mean training loss of the epoch, weighted by batch size."""
        return float(self._loss_sum.item() / max(self._loss_n, 1))

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
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.opts.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.opts.lr)
        if self.opts.lr_schedule == "constant":
            return optimizer
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(total * self.opts.warmup_ratio)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(total - warmup, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class _EpochTracker(Callback):
    """Keeps the best validation epoch's weights in memory and reports every epoch's metrics.

    In memory rather than a checkpoint file: nothing is left on disk, and the weights (one small
    encoder at most) are reloaded before the test evaluation.
    """

    def __init__(self, report: MetricsCallback | None) -> None:
        self.report = report
        self.best_f1 = -math.inf
        self.best_state: dict[str, Tensor] | None = None
        self.epochs = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        f1 = float(trainer.callback_metrics["val_f1_macro"])
        if f1 > self.best_f1:  # strict: ties keep the earlier epoch, as early stopping does
            self.best_f1 = f1
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
            }

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs += 1
        assert isinstance(pl_module, _Classifier)
        metrics = {"train_loss": pl_module.epoch_loss()}
        for key in ("val_f1_macro", "val_accuracy"):
            if key in trainer.callback_metrics:
                metrics[key] = float(trainer.callback_metrics[key])
        if self.report is not None:
            self.report(metrics, trainer.current_epoch)


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Silence Lightning's banners and hints (all of them unless `progress`); restore global
    state that training changes (log levels, deterministic-algorithm flags) afterwards."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    hf_bars = hf_logging.is_progress_bar_enabled()
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        if not progress:
            for logger in loggers:
                logger.setLevel(logging.WARNING)
            hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            if hf_bars:
                hf_logging.enable_progress_bar()
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn

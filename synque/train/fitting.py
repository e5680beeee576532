"""One Lightning fit as every trainer runs it: early stopping that ends on the best weights.

`EarlyStoppingFit` owns the Lightning `Trainer`: it stops after `patience` epochs without a
strict improvement of the monitored validation metric (never before `min_epochs`), keeps the
best epoch's weights in memory and loads them back after the fit, so what is tested is the best
validation epoch, not the last one. Every epoch's `train_loss` and `val_*` metrics go to a
callback (the stage logs them as MLflow curves). Nothing is left on disk: checkpoints are
in-memory copies and Lightning's working folder is a temporary one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor
from torch.utils.data import DataLoader

from synque.train.base import MetricsCallback
from synque.utils.torch_threads import torch_threads

# Lightning hints that do not apply to small in-memory data sets.
_NOISE = (
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*GPU available but not used.*",
    r".*defined a `validation_step` but have no `val_dataloader`.*",  # no validation split
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning vs this torch; harmless
    r".*min_epochs=.* has not been met.*",  # min_epochs holds off early stopping, as asked
)


@contextlib.contextmanager
def quiet(progress: bool) -> Iterator[None]:
    """Silence Lightning's banners and hints (all of them unless `progress`); restore global
    state that training changes (log levels, deterministic-algorithm flags) afterwards."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    # Hugging Face bars matter only where a transformers model loads (the text classifier)
    hf_logging = sys.modules.get("transformers.utils.logging")
    hf_bars = hf_logging is not None and hf_logging.is_progress_bar_enabled()
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
            if hf_logging is not None:
                hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            if hf_bars:
                hf_logging.enable_progress_bar()  # type: ignore[union-attr]
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def uses_gpu(accelerator: str) -> bool:
    """Whether Lightning's `accelerator` setting ends up on a CUDA device."""
    if accelerator == "auto":
        return torch.cuda.is_available()
    return accelerator in ("gpu", "cuda")


class BestEpoch(Callback):
    """Keeps the best validation epoch's weights (CPU copies) and reports every epoch."""

    def __init__(
        self, monitor: str, mode: Literal["min", "max"], report: MetricsCallback | None
    ) -> None:
        self.monitor = monitor
        self.mode = mode
        self.report = report
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.state: dict[str, Tensor] | None = None
        self.epochs = 0

    def _improves(self, value: float) -> bool:
        # strict, as EarlyStopping: a tie keeps the earlier epoch; NaN never improves
        return value < self.best if self.mode == "min" else value > self.best

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self._improves(value):
            self.best, self.best_epoch = value, trainer.current_epoch
            self.state = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
            }

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # validation of this epoch has run already: its metrics sit beside the epoch's loss
        self.epochs += 1
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k == "train_loss" or k.startswith("val_")
        }
        if self.report is not None:
            self.report(metrics, trainer.current_epoch)


@dataclass
class FitOutcome:
    """What a fit took: epochs run, the best validation epoch (-1 without validation)."""

    epochs: int
    best_epoch: int
    best_score: float
    device: str


class EarlyStoppingFit:
    """`with EarlyStoppingFit(...) as fit: fit.device ...; fit.run(module, train, val)`.

    A context manager because the device is needed before the data is prepared (a frozen
    encoder embeds on it), and the global torch state a fit changes (threads, deterministic
    flags, log levels) must be restored however the fit ends.
    """

    def __init__(
        self,
        *,
        monitor: str,
        mode: Literal["min", "max"],
        patience: int,
        max_epochs: int,
        min_epochs: int = 0,
        validation: bool = True,
        accelerator: str = "auto",
        precision: str = "32-true",
        threads: int | None = None,
        progress: bool = False,
        metrics_callback: MetricsCallback | None = None,
    ) -> None:
        self.validation = validation
        self.progress = progress
        self.threads = threads
        self.best = BestEpoch(monitor, mode, metrics_callback)
        self.callbacks: list[Callback] = [self.best]
        if validation:
            self.callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
        self.options = {
            "accelerator": accelerator,
            "precision": precision,
            "max_epochs": max_epochs,
            "min_epochs": min(min_epochs, max_epochs),
        }
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> EarlyStoppingFit:
        stack = self._stack
        stack.enter_context(quiet(self.progress))
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="synque-train-"))
        gpu = uses_gpu(str(self.options["accelerator"]))
        if not gpu:  # one torch thread per job avoids oversubscription side by side
            stack.enter_context(torch_threads(self.threads))
        self.trainer = pl.Trainer(
            **self.options,
            devices=1,
            callbacks=self.callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=self.progress,
            enable_model_summary=self.progress,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            # bitwise reproducible on the CPU; on the GPU cuDNN may pick the fastest kernels
            deterministic="warn" if not gpu else False,
            benchmark=gpu,
            default_root_dir=workdir,
        )
        self.device: torch.device = self.trainer.strategy.root_device
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(
        self,
        module: pl.LightningModule,
        train: DataLoader,
        val: DataLoader | None,
    ) -> FitOutcome:
        """Fit, then load the best validation epoch's weights into `module`."""
        module.train()  # modules built in eval mode stay so: Lightning keeps modes as found
        self.trainer.fit(
            module, train_dataloaders=train, val_dataloaders=val if self.validation else None
        )
        if self.best.state is not None:
            module.load_state_dict(self.best.state)
        return FitOutcome(
            epochs=self.best.epochs,
            best_epoch=self.best.best_epoch,
            best_score=self.best.best if self.best.state is not None else math.nan,
            device=str(self.device),
        )


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device) for k, v in inputs.items()}
    return inputs.to(device)


@torch.no_grad()
def predict_logits(module: torch.nn.Module, loader: DataLoader, device: torch.device) -> Tensor:
    """Logits (float32, on the CPU) for a loader of (inputs, label) batches, on `device`.

    Lightning moves the module off the device after a fit; it goes back there for this and
    returns to the CPU afterwards.
    """
    module.to(device).eval()
    out = [module(_to_device(inputs, device)).float().cpu() for inputs, _ in loader]
    module.cpu()
    return torch.cat(out)

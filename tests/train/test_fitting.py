"""Early stopping ends on the best validation epoch's weights (a hand-computed case).

One weight w, starting at 0. Training minimises (w - 1)^2 with SGD (lr 0.25, one step per
epoch): w = 0.5, 0.75, 0.875, 0.9375 after epochs 0..3. Validation wants w = 0.3:
val_loss = (w - 0.3)^2 = 0.04, 0.2025, 0.330625, 0.40640625. Epoch 0 is the best; every
later epoch is worse, so the weights tested must be w = 0.5, not the last ones.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader

from synque.train.fitting import EarlyStoppingFit

VAL_LOSS = [0.04, 0.2025, 0.330625, 0.40640625]
TRAIN_LOSS = [1.0, 0.25, 0.0625, 0.015625]  # (w - 1)^2 before each epoch's step


class _Scalar(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = (self.w - 1.0) ** 2
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=1)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val_loss", (self.w - 0.3) ** 2, batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.25)


def _fit(**options: object) -> tuple[float, object, list[tuple[dict[str, float], int]]]:
    calls: list[tuple[dict[str, float], int]] = []
    module = _Scalar()
    settings = {"monitor": "val_loss", "mode": "min", "patience": 1, "max_epochs": 10}
    settings.update(options)
    with EarlyStoppingFit(
        **settings, accelerator="cpu", threads=1, metrics_callback=lambda m, e: calls.append((m, e))
    ) as fit:
        outcome = fit.run(module, DataLoader([0.0]), DataLoader([0.0]))
    return float(module.w.detach()), outcome, calls


def test_best_epoch_weights_are_restored_after_later_worse_epochs() -> None:
    w, outcome, calls = _fit(min_epochs=4)
    assert outcome.epochs == 4  # patience ran out at epoch 1, min_epochs held it to 4
    assert outcome.best_epoch == 0
    assert outcome.best_score == pytest.approx(0.04)
    assert w == pytest.approx(0.5)  # epoch 0's weight, not the last epoch's 0.9375
    assert [e for _, e in calls] == [0, 1, 2, 3]
    assert [m["val_loss"] for m, _ in calls] == pytest.approx(VAL_LOSS)
    assert [m["train_loss"] for m, _ in calls] == pytest.approx(TRAIN_LOSS)


def test_patience_stops_without_min_epochs() -> None:
    w, outcome, _ = _fit(min_epochs=0, patience=2)
    assert outcome.epochs == 3  # epochs 1 and 2 did not improve
    assert w == pytest.approx(0.5)


def test_without_validation_the_last_weights_stay() -> None:
    w, outcome, calls = _fit(validation=False, max_epochs=3)
    assert outcome.epochs == 3 and outcome.best_epoch == -1
    assert w == pytest.approx(0.875)
    assert all(set(m) == {"train_loss"} for m, _ in calls)


def test_torch_threads_are_restored() -> None:
    before = torch.get_num_threads()
    _fit(max_epochs=1)
    assert torch.get_num_threads() == before

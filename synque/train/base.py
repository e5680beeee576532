"""What every trainer shares: the interface the `train` stage calls, the result, the split.

The stage knows one interface, `Trainer`: `run_tags()` and `plan(task)` once per job, then
`evaluate(task, group, name, seed, metrics_callback)` per candidate set. Whether the number is
measured here (a model trained on the set and tested on real data: `SupervisedTrainer`) or
imported (`synque.train.recorded`) is the component's business, so the stage holds no branch
on where performance comes from, and a new kind of trainer is one class plus one config file.

Kept free of torch and Lightning (those live in `synque.train.fitting`), so importing recorded
performance does not pay for a deep-learning import.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl
from sklearn.model_selection import train_test_split

from synque import SynqueError
from synque.data.task import Task

#: `metrics_callback(metrics, epoch)`: per-epoch curves (`train_loss`, `val_*`).
MetricsCallback = Callable[[dict[str, float], int], None]


@dataclass
class TrainResult:
    """The performance of one candidate set, as the stage logs it.

    `metrics` always holds `task_performance` and the trainer's native metric (`f1_macro`,
    `mrr`, ...); `params` what the number was computed on (`n_train`, `n_val`, `n_test`);
    `inputs` the (synthetic, real test) frames when a model was trained, for dataset lineage.
    """

    metrics: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    inputs: tuple[pl.DataFrame, pl.DataFrame] | None = None

    @property
    def task_performance(self) -> float:
        return self.metrics["task_performance"]


class Trainer(ABC):
    """A `train` component: the downstream performance of each candidate set of a task."""

    #: value of the run tag `synque.performance_source`
    performance_source: ClassVar[str] = "trained"
    #: False when the number does not depend on the seed (runs are then tagged `seed=none`)
    seeded: ClassVar[bool] = True

    def run_tags(self) -> dict[str, str]:
        """Tags of the job's parent and child runs (without the `synque.` prefix)."""
        tags = {"performance_source": self.performance_source}
        if not self.seeded:
            tags["seed"] = "none"
        return tags

    def plan(self, task: Task) -> list[tuple[str, str]]:
        """The (group, candidate) pairs to evaluate; checks that need no training go here."""
        return task.pairs()

    @abstractmethod
    def evaluate(
        self,
        task: Task,
        group: str,
        name: str,
        seed: int,
        metrics_callback: MetricsCallback | None = None,
    ) -> TrainResult:
        """Performance of candidate set `name` of `group`."""


class SupervisedTrainer(Trainer):
    """Train a model on a candidate set (its labels), test it on the task's labeled real set.

    Subclasses say what an example is (`modality`, `input_column`) and what they measure
    (`native_metric`), and implement `_fit_evaluate`; this class checks the inputs, loads the
    frames and times the work. `fit_evaluate` is the entry point for code that has frames.
    """

    native_metric: ClassVar[str]
    modality: ClassVar[str] = "text"
    input_column: ClassVar[str] = "text"

    def __init__(self) -> None:
        self._tests: dict[str, pl.DataFrame] = {}

    def plan(self, task: Task) -> list[tuple[str, str]]:
        kind = getattr(task, "modality", "text")
        if kind != self.modality:
            raise SynqueError(
                f"train: {type(self).__name__} trains on {self.modality} examples but task "
                f"{task.name} holds {kind} examples (choose another train config)"
            )
        if task.native_metric not in ("task_performance", self.native_metric):
            raise SynqueError(
                f"train: task {task.name} reports {task.native_metric}, but "
                f"{type(self).__name__} measures {self.native_metric}"
            )
        pairs = task.pairs()
        for group in dict.fromkeys(g for g, _ in pairs):
            test = self._test_set(task, group)
            task.model_inputs(test, f"real test set of {group}")  # images checked up front
        for group, name in pairs:
            task.model_inputs(task.load_candidate(group, name), name)
        return pairs

    def _test_set(self, task: Task, group: str) -> pl.DataFrame:
        """The labeled real test set of a group, read once per job."""
        if group not in self._tests:
            test = task.real_test(group)
            if test is None or "label" not in test.columns:
                raise SynqueError(
                    f"task {task.name}: no labeled real test set for group '{group}' "
                    "(a task folder needs real/test with labels)"
                )
            self._tests[group] = test
        return self._tests[group]

    def evaluate(
        self,
        task: Task,
        group: str,
        name: str,
        seed: int,
        metrics_callback: MetricsCallback | None = None,
    ) -> TrainResult:
        synth = task.load_candidate(group, name)
        if "label" not in synth.columns:
            raise SynqueError(
                f"{task.candidate_path(group, name)}: no label field "
                f"'{task.label_field}' to train on"
            )
        test = self._test_set(task, group)
        result = self.fit_evaluate(synth, test, seed, metrics_callback)
        result.inputs = (synth, test)
        return result

    def fit_evaluate(
        self,
        train: pl.DataFrame,
        test: pl.DataFrame,
        seed: int,
        metrics_callback: MetricsCallback | None = None,
    ) -> TrainResult:
        """Train on `train` (the synthetic set), score on `test` (labels compared as strings).

        A test label never seen in training counts as wrong. Adds `train_seconds`.
        """
        self._check_frames(train, test)
        start = time.perf_counter()
        result = self._fit_evaluate(train, test, seed, metrics_callback)
        result.metrics["train_seconds"] = time.perf_counter() - start
        return result

    @abstractmethod
    def _fit_evaluate(
        self,
        train: pl.DataFrame,
        test: pl.DataFrame,
        seed: int,
        metrics_callback: MetricsCallback | None,
    ) -> TrainResult: ...

    def _check_frames(self, train: pl.DataFrame, test: pl.DataFrame) -> None:
        """Fail early, in one line, on input that would otherwise break deep inside training."""
        for what, frame in (("training set", train), ("test set", test)):
            if frame.is_empty():
                raise SynqueError(f"train: the {what} is empty")
            missing = [c for c in (self.input_column, "label") if c not in frame.columns]
            if missing:
                raise SynqueError(f"train: the {what} has no '{missing[0]}' column")
        n_classes = train["label"].cast(pl.String).n_unique()
        if n_classes < 2:
            raise SynqueError(
                f"train: the training set holds {n_classes} class; a classifier needs at least 2"
            )


def holdout_split(
    labels: Sequence[Any], n_holdout: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (keep, holdout) index split, stratified when every class fits on both sides.

    Why stratified: with a few examples per class, a plain random hold-out often misses a class
    entirely, and validation scores then jump with the seed rather than with the data.
    """
    labels = np.asarray([str(y) for y in labels], dtype=object)
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


def validation_split(
    labels: Sequence[Any], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices: `fraction` of the set (rounded up) held out, at least one
    example left to fit on."""
    n_val = min(len(labels) - 1, math.ceil(fraction * len(labels)))
    return holdout_split(labels, n_val, seed)


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """A bad `train.<key>` setting, in one line: `train.lr=-1: must be > 0`."""
    if not ok:
        raise SynqueError(f"train.{key}={value!r}: {rule}")


def check_fit_options(lr: float, max_epochs: int, patience: int, val_fraction: float) -> None:
    """The options every early-stopped fit shares, checked alike for every trainer."""
    require(lr > 0, "lr", lr, "must be > 0")
    require(max_epochs >= 1, "max_epochs", max_epochs, "must be >= 1")
    require(patience >= 0, "patience", patience, "must be >= 0")
    require(0.0 <= val_fraction < 1.0, "val_fraction", val_fraction, "must be in [0, 1)")

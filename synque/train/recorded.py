"""Performance measured elsewhere, imported as ordinary `train` runs (`train=recorded`).

The paper's `task_performance/*.csv` or a task folder's `performance.csv` (whatever
`task.recorded_performance()` returns) become one child run per candidate set with
`task_performance` and the task's native metric, tagged `synque.performance_source=recorded`
and `synque.seed=none` (a recorded number does not depend on the real-sample seed), so
`correlate` treats recorded and trained performance the same way.
"""

from __future__ import annotations

import logging

import polars as pl

from synque import SynqueError
from synque.data.task import Task
from synque.train.base import MetricsCallback, Trainer, TrainResult

log = logging.getLogger(__name__)


class RecordedPerformance(Trainer):
    """Looks each candidate set up in the task's recorded performance table."""

    performance_source = "recorded"
    seeded = False

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[str, float]] = {}

    def plan(self, task: Task) -> list[tuple[str, str]]:
        """The candidate sets that have a recorded number (others are warned about)."""
        frame = task.recorded_performance()
        wanted = set(task.pairs())
        keys = list(zip(frame["group"], frame["dataset"], strict=True))
        extra = sorted(f"{d}@{g}" for g, d in keys if (g, d) not in wanted)
        if extra:
            log.warning("recorded performance for sets not in the task: %s", ", ".join(extra[:5]))
        frame = frame.filter(pl.Series([k in wanted for k in keys], dtype=pl.Boolean))
        if frame.is_empty():
            raise SynqueError(f"task {task.name}: recorded performance matches no candidate set")
        native = task.native_metric
        for row in frame.iter_rows(named=True):
            metrics = {"task_performance": float(row["task_performance"])}
            if native in row:
                metrics[native] = float(row[native])
            self._rows[(row["group"], row["dataset"])] = metrics
        return list(self._rows)

    def evaluate(
        self,
        task: Task,
        group: str,
        name: str,
        seed: int,
        metrics_callback: MetricsCallback | None = None,
    ) -> TrainResult:
        if not self._rows:
            self.plan(task)
        if (group, name) not in self._rows:
            raise SynqueError(f"task {task.name}: no recorded performance for '{name}' ({group})")
        return TrainResult(metrics=dict(self._rows[(group, name)]))

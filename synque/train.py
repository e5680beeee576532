"""The `train` stage: downstream task performance per candidate set.

`train.source=recorded` imports performance measured elsewhere (the paper's
`task_performance/*.csv`, or a task folder's `performance.csv`) as ordinary train runs tagged
`synque.performance_source=recorded`, so correlate treats both sources the same way.
"""

from __future__ import annotations

import logging

import mlflow
from omegaconf import DictConfig

from synque import SynqueError
from synque.tasks import load_task
from synque.tracking import StageRun

log = logging.getLogger(__name__)


def run_train(cfg: DictConfig) -> None:
    source = str(cfg.train.source)
    if source == "recorded":
        return import_recorded(cfg)
    raise SynqueError(f"train.source '{source}' unknown (have: recorded)")


def import_recorded(cfg: DictConfig) -> None:
    """One child run per (group, candidate set) with `task_performance` + the native metric."""
    task = load_task(cfg)
    frame = task.recorded_performance()
    wanted = {(g, n) for g in task.groups() for n in task._candidate_files(g)}
    missing = sorted(
        f"{d}@{g}" for d, g in zip(frame.dataset, frame.group, strict=True) if (g, d) not in wanted
    )
    if missing:
        log.warning("recorded performance for sets not in the task: %s", ", ".join(missing[:5]))
    frame = frame[[(g, d) in wanted for d, g in zip(frame.dataset, frame.group, strict=True)]]
    if frame.empty:
        raise SynqueError(f"task {task.name}: recorded performance matches no candidate set")
    job = StageRun(cfg, "train", task.name, tags={"performance_source": "recorded", "seed": "none"})
    if job.finished_run() is not None:
        log.info("recorded performance of %s already imported: skipped", task.name)
        return
    native = task.native_metric
    with job:
        done = job.finished_children()
        for row in frame.itertuples(index=False):
            if (row.group, row.dataset) in done:
                job.children_skipped += 1
                continue
            with job.child(row.dataset, row.group, tags={"performance_source": "recorded"}):
                metrics = {"task_performance": float(row.task_performance)}
                if native != "task_performance":
                    metrics[native] = float(getattr(row, native))
                mlflow.log_metrics(metrics)
        log.info("imported recorded performance of %d candidate sets", job.children_logged)

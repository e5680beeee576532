"""The `train` stage: downstream task performance per candidate set.

`train.source=recorded` imports performance measured elsewhere (the paper's
`task_performance/*.csv`, or a task folder's `performance.csv`) as ordinary train runs tagged
`synque.performance_source=recorded`, so correlate treats both sources the same way.
"""

from __future__ import annotations

import logging

import mlflow
import polars as pl
from omegaconf import DictConfig

from synque import SynqueError
from synque.stages.common import load_task
from synque.tracking import StageRun, log_inputs

log = logging.getLogger(__name__)


def run_train(cfg: DictConfig) -> None:
    source = str(cfg.train.source)
    if source == "recorded":
        return import_recorded(cfg)
    if source == "trained":
        return train_candidates(cfg)
    raise SynqueError(f"train.source '{source}' unknown (have: recorded, trained)")


def train_candidates(cfg: DictConfig) -> None:
    """Train a classifier on every candidate set, test on the task's labeled real test set."""
    task = load_task(cfg)
    seed = int(cfg.seed)
    pairs = [(g, n) for g in task.groups() for n in task.candidates(g)]
    tests = {}
    for group in dict.fromkeys(g for g, _ in pairs):
        test = task.real_test(group)
        if test is None or "label" not in test.columns:
            raise SynqueError(
                f"task {task.name}: no labeled real test set for group '{group}' "
                "(a task folder needs real/test.* with a label field)"
            )
        tests[group] = test
    job = StageRun(
        cfg,
        "train",
        task.name,
        tags={"performance_source": "trained", "backbone": str(cfg.train.backbone)},
    )
    if job.finished_run() is not None:
        log.info("train %s seed=%s already FINISHED: skipped", task.name, seed)
        return
    from tqdm.auto import tqdm

    from synque.train.classifier import train_text_classifier

    with job:
        done = job.finished_children()
        bar = tqdm(
            pairs, desc=f"train {task.name} seed={seed}", unit="set", disable=not cfg.progress
        )
        for group, name in bar:
            if (group, name) in done:
                job.children_skipped += 1
                continue
            synth = task.load_candidate(group, name)
            if "label" not in synth.columns:
                raise SynqueError(
                    f"{task.candidate_path(group, name)}: no label field "
                    f"'{task.label_field}' to train on"
                )
            test = tests[group]
            with job.child(name, group):
                log_inputs(task, group, name, synth, test, seed, real_context="test")
                result = train_text_classifier(
                    synth["text"].to_list(),
                    synth["label"].to_list(),
                    test["text"].to_list(),
                    test["label"].to_list(),
                    cfg.train,
                    seed=seed,
                    progress=False,
                    metrics_callback=lambda metrics, step: mlflow.log_metrics(metrics, step=step),
                )
                mlflow.log_metrics(
                    {
                        "task_performance": result.f1_macro,
                        task.native_metric: result.f1_macro,
                        "accuracy": result.accuracy,
                        "best_val_f1": result.best_val_f1,
                        "epochs": result.epochs,
                        "train_seconds": result.seconds,
                        **{f"f1.{k}": v for k, v in result.per_class_f1.items()},
                    }
                )
                mlflow.log_params(
                    {"n_train": result.n_train, "n_val": result.n_val, "n_test": result.n_test}
                )
                mlflow.set_tag("synque.device", result.device)


def import_recorded(cfg: DictConfig) -> None:
    """One child run per (group, candidate set) with `task_performance` + the native metric."""
    task = load_task(cfg)
    frame = task.recorded_performance()
    wanted = {(g, n) for g in task.groups() for n in task.candidates(g)}
    pairs = list(zip(frame["dataset"], frame["group"], strict=True))
    missing = sorted(f"{d}@{g}" for d, g in pairs if (g, d) not in wanted)
    if missing:
        log.warning("recorded performance for sets not in the task: %s", ", ".join(missing[:5]))
    frame = frame.filter(pl.Series([(g, d) in wanted for d, g in pairs], dtype=pl.Boolean))
    if frame.is_empty():
        raise SynqueError(f"task {task.name}: recorded performance matches no candidate set")
    job = StageRun(cfg, "train", task.name, tags={"performance_source": "recorded", "seed": "none"})
    if job.finished_run() is not None:
        log.info("recorded performance of %s already imported: skipped", task.name)
        return
    native = task.native_metric
    with job:
        done = job.finished_children()
        for row in frame.iter_rows(named=True):
            if (row["group"], row["dataset"]) in done:
                job.children_skipped += 1
                continue
            with job.child(row["dataset"], row["group"], tags={"performance_source": "recorded"}):
                metrics = {"task_performance": float(row["task_performance"])}
                if native != "task_performance":
                    metrics[native] = float(row[native])
                mlflow.log_metrics(metrics)
        log.info("imported recorded performance of %d candidate sets", job.children_logged)

"""The `train` stage: downstream task performance per candidate set.

`cfg.train` names a trainer component (`_target_`): a model trained on each candidate set and
tested on the task's labeled real test set (`train=classifier`, `probe`, `resnet50`,
`small_cnn`; `lora` fine-tunes a causal LM and scores its answers), or performance recorded
elsewhere (`train=recorded`). The stage only wires the component to the run lifecycle; which
kind of number it is, is the component's business.
"""

from __future__ import annotations

import logging

import mlflow
from omegaconf import DictConfig

from synque.components import build
from synque.data.task import Task
from synque.stages.common import load_task
from synque.tracking import TAG, StageRun, log_inputs
from synque.train.base import TrainResult

log = logging.getLogger(__name__)


def run_train(cfg: DictConfig) -> None:
    """One child run per candidate set with `task_performance` and the task's native metric."""
    trainer = build(cfg.train, "train")
    task = load_task(cfg)
    job = StageRun(cfg, "train", task.name, tags=trainer.run_tags())
    if job.finished_run() is not None:
        log.info("train %s seed=%s already FINISHED: skipped", task.name, cfg.seed)
        return
    pairs = trainer.plan(task)
    seed = int(cfg.seed)
    with job:
        for group, name in job.pending(pairs, desc=f"train {task.name} seed={seed}"):
            with job.child(name, group):
                result = trainer.evaluate(
                    task,
                    group,
                    name,
                    seed,
                    metrics_callback=lambda metrics, step: mlflow.log_metrics(metrics, step=step),
                )
                log_result(task, group, name, seed, result)
        log.info("train %s: %d candidate sets logged", task.name, job.children_logged)


def log_result(task: Task, group: str, name: str, seed: int, result: TrainResult) -> None:
    """Metrics (the task's native metric beside `task_performance`), params, device, lineage."""
    if result.inputs is not None:
        log_inputs(task, group, name, *result.inputs, seed, real_context="test")
    metrics = dict(result.metrics)
    metrics.setdefault(task.native_metric, metrics["task_performance"])
    mlflow.log_metrics(metrics)
    if result.params:
        mlflow.log_params(result.params)
    if result.device:
        mlflow.set_tag(f"{TAG}device", result.device)
    # folders a trainer hands back (a LoRA adapter, predictions): {artifact path: local folder}
    for where, folder in (getattr(result, "artifacts", None) or {}).items():
        mlflow.log_artifacts(str(folder), artifact_path=where)

"""The `generate` stage for image tasks: one labeled image set per strategy.

The writer is a component (`generate.writer._target_`, a function
`(root, *, seed, n, strategies={name: options}) -> {name: folder}` that writes each set into
`root/synthetic/<name>/` atomically and keeps a record of how it made it, so a finished set
is never rewritten and a changed recipe is an error rather than a silent overwrite).
`generate.prepare` writes the real splits first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf

from synque.components import build, resolve_target
from synque.config import to_container
from synque.data.images import list_image_set
from synque.data.task import NO_GROUP
from synque.tracking import StageRun

log = logging.getLogger(__name__)


def run_generate_images(cfg: DictConfig) -> None:
    """Write every strategy's image set into the task folder and log it."""
    gcfg = cfg.generate
    writer = resolve_target(gcfg.writer, "generate.writer")
    strategies = to_container(gcfg.strategies)
    limit = OmegaConf.select(cfg, "generate.max_strategies", default=None)
    strategies = dict(list(strategies.items())[: limit or None])
    root = Path(str(cfg.task.root)).expanduser()
    if (prepare := gcfg.get("prepare")) is not None:
        build(prepare, "generate.prepare", root=root)
    name = OmegaConf.select(cfg, "task.name", default=None) or root.name
    job = StageRun(cfg, "generate", name, tags={"generator": str(gcfg.writer._target_)})
    if job.finished_run() is not None:
        log.info("generate %s: already FINISHED, skipped", name)
        return
    pairs = [(NO_GROUP, s) for s in strategies]
    with job:
        for _, strategy in job.pending(pairs, f"generate {name}"):
            options = strategies[strategy] or {}
            with job.child(strategy, tags={"generation_strategy": strategy}):
                folders = writer(
                    root, seed=int(gcfg.seed), n=int(gcfg.per_set), strategies={strategy: options}
                )
                images = list_image_set(folders[strategy])
                mlflow.log_params({f"strategy.{k}": v for k, v in options.items()})
                mlflow.log_metrics(
                    {"n_examples": images.height, "n_classes": images["label"].n_unique()}
                )

"""The `pipeline` stage: several stages in one command (the quickstart).

Each step runs an ordinary stage with `stage` replaced by that stage's config (plus the
step's overrides), so every step logs, caches and skips exactly as when run on its own: a
warm rerun skips every FINISHED config hash.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from synque import SynqueError
from synque.components import build
from synque.config import project_root
from synque.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)


def step_config(cfg: DictConfig, stage: str, overrides: DictConfig | None) -> DictConfig:
    """A copy of `cfg` whose `stage` is configs/stage/<stage>.yaml merged with overrides."""
    path = project_root() / "configs" / "stage" / f"{stage}.yaml"
    if not path.is_file():
        raise SynqueError(f"pipeline: no stage config {path}")
    # resolved first: keys elsewhere may refer to the pipeline's own `stage`
    step = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(step):
        step.stage = OmegaConf.merge(OmegaConf.load(path), overrides or {})
    return step


def prepare(cfg: DictConfig) -> None:
    """Materialise the task folder when the pipeline builds its own data.

    `stage.prepare` is a component (`_target_` = a function taking `root` and its options),
    e.g. the quickstart's movie-reviews folder or the digits benchmark's real splits.
    """
    spec = OmegaConf.select(cfg, "stage.prepare", default=None)
    if spec:
        build(spec, "stage.prepare", root=Path(str(cfg.task.root)).expanduser())


def run_pipeline(cfg: DictConfig) -> None:
    prepare(cfg)
    timings = {}
    for step in cfg.stage.steps:
        name = str(step.stage)
        step_cfg = step_config(cfg, name, step.get("overrides"))
        start = time.perf_counter()
        log.info("pipeline step: %s", name)
        hydra.utils.get_method(str(step_cfg.stage._target_))(step_cfg)
        timings[name] = time.perf_counter() - start
    print("\nStage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    uri = resolve_tracking_uri(cfg)
    print(f"Browse every run:  mlflow ui --backend-store-uri {uri}")

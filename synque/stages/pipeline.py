"""The `pipeline` stage: several stages in one command (the quickstart, the digits study).

Each step runs an ordinary stage with `stage` replaced by that stage's config (plus the
step's `overrides` of stage keys), so every step logs, caches and skips exactly as when run
on its own: a warm rerun skips every FINISHED config hash. A step may also run once per seed
(`seeds: [1, 2, 3]`) and swap config groups (`use: [embedder=efficientnet_lite0]`, composed
by Hydra exactly as on the command line).
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


def _job_overrides() -> list[str]:
    """The command line's overrides of this job (empty outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def swapped_groups(uses: list[str]) -> dict[str, DictConfig]:
    """`group=option` (or `group.key=value`) overrides composed by Hydra; the new group nodes."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [*_job_overrides(), *uses]
    if GlobalHydra.instance().is_initialized():
        composed = compose(config_name="config", overrides=overrides)
    else:
        configs = str(project_root() / "configs")
        with initialize_config_dir(config_dir=configs, version_base="1.3"):
            composed = compose(config_name="config", overrides=overrides)
    names = dict.fromkeys(use.split("=", 1)[0].lstrip("+~").split(".")[0] for use in uses)
    return {name: composed[name] for name in names}


def step_config(
    cfg: DictConfig,
    stage: str,
    overrides: DictConfig | None,
    seed: int | None = None,
    groups: dict[str, DictConfig] | None = None,
) -> DictConfig:
    """A copy of `cfg` whose `stage` is configs/stage/<stage>.yaml merged with overrides."""
    path = project_root() / "configs" / "stage" / f"{stage}.yaml"
    if not path.is_file():
        raise SynqueError(f"pipeline: no stage config {path}")
    # resolved first: keys elsewhere may refer to the pipeline's own `stage`
    step = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(step):
        step.stage = OmegaConf.merge(OmegaConf.load(path), overrides or {})
        for group, node in (groups or {}).items():
            step[group] = node
        if seed is not None:
            step.seed = seed
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
    timings: dict[str, float] = {}
    for step in cfg.stage.steps:
        name = str(step.stage)
        uses = list(step.get("use") or [])
        groups = swapped_groups(uses) if uses else None
        label = name + (f" ({', '.join(uses)})" if uses else "")
        start = time.perf_counter()
        for seed in step.get("seeds") or [None]:
            step_cfg = step_config(cfg, name, step.get("overrides"), seed, groups)
            log.info("pipeline step: %s seed=%s", label, step_cfg.seed)
            hydra.utils.get_method(str(step_cfg.stage._target_))(step_cfg)
        timings[label] = timings.get(label, 0.0) + time.perf_counter() - start
    print("\nStage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    uri = resolve_tracking_uri(cfg)
    print(f"Browse every run:  mlflow ui --backend-store-uri {uri}")

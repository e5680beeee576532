"""What several stages build from the config: the task, the embedder, the LLM backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from synque.components import build
from synque.data.task import Task
from synque.embed.base import Embedder


def load_task(cfg: DictConfig) -> Task:
    """The task of `cfg.task` (its `_target_` names the layout)."""
    return build(cfg.task, "task")


def open_embedder(cfg: DictConfig) -> Embedder:
    """The embedder of `cfg.embedder`, caching under `paths.cache_dir`."""
    return build(
        cfg.embedder, "embedder", cache_dir=Path(cfg.paths.cache_dir), progress=bool(cfg.progress)
    )


def uses_replay(cfg: DictConfig) -> bool:
    return str(cfg.llm.get("kind", "")) == "replay"


def open_llm(cfg: DictConfig) -> Any:
    """The configured LLM backend; None for replay (stages read released material)."""
    if uses_replay(cfg):
        return None
    from synque.llm import build_llm

    return build_llm(cfg.llm, Path(cfg.paths.cache_dir))

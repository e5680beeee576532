"""What several stages build from the config: the task, the embedder, the LLM backend."""

from __future__ import annotations

from pathlib import Path

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


def embedder_label(cfg: DictConfig) -> str:
    """The `synque.embedder` tag: the model, plus the backend when it is not the fp32 reference.

    Readers keep the newest run per embedder, so a bf16 run must not carry the fp32 run's
    label: it would silently replace the reference values instead of standing beside them.
    """
    backend = str(cfg.embedder.get("backend") or "fp32")
    model = str(cfg.embedder.model)
    return model if backend == "fp32" else f"{model}+{backend}"

"""Trainer configs as the CLI composes them (a file's Hydra defaults list applied)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from synque.components import build
from synque.config import register_resolvers

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="session")
def train_config() -> Callable[..., dict[str, Any]]:
    """`train_config("probe", max_epochs=3)`: configs/train/probe.yaml composed, overridden."""
    register_resolvers()
    composed: dict[str, dict[str, Any]] = {}

    def _config(name: str, **overrides: Any) -> dict[str, Any]:
        if name not in composed:
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                cfg = compose(config_name="config", overrides=[f"train={name}"])
            composed[name] = OmegaConf.to_container(cfg.train, resolve=True)  # type: ignore[assignment]
        return {**composed[name], **overrides}

    return _config


@pytest.fixture(scope="session")
def make_trainer(train_config: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """A trainer built the way the stage builds it (`synque.components.build`)."""

    def _make(name: str, **overrides: Any) -> Any:
        return build(train_config(name, **overrides), "train")

    return _make

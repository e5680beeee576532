"""Every experiment composes, alone and with the debug overlay."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from synque.config import config_hash

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parent.parent / "configs" / "experiment").glob("*.yaml")
)


def test_there_are_experiments() -> None:
    for name in ("sentiment_repr", "sentiment_recorded", "sentiment_correlate", "folder_repr"):
        assert name in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("debug", [False, True])
def test_experiment_composes(make_cfg, name: str, debug: bool) -> None:
    overrides = [f"+experiment={name}"] + (["debug=default"] if debug else [])
    if name.startswith("folder"):
        overrides.append("task.root=/tmp/some-task")
    cfg = make_cfg(*overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["stage"]["_target_"].startswith("synque.")
    assert resolved["task"]["kind"] in {"sentiment", "text2sql", "web", "image", "folder", "digits"}
    prefix = name.split("_")[0]
    expected_kind = "folder" if prefix == "quickstart" else prefix
    assert resolved["task"]["kind"] == expected_kind
    if debug:
        assert resolved["task"]["max_candidates"] is not None


def test_quickstart_debug_overlay_composes(make_cfg) -> None:
    cfg = make_cfg("+experiment=quickstart", "debug=quickstart")
    assert cfg.generate.max_strategies == 3
    assert [s.stage for s in cfg.stage.steps][0] == "generate"
    assert cfg.task.root.endswith("quickstart-40-60")


def test_stage_hash_ignores_groups_the_stage_does_not_use(make_cfg) -> None:
    a = make_cfg("+experiment=sentiment_repr")
    b = make_cfg("+experiment=sentiment_repr", "llm=openai", "train=probe")
    c = make_cfg("+experiment=sentiment_repr", "proxy.pad.classifier=xgboost")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)


def test_hash_ignores_paths_but_not_seed(make_cfg) -> None:
    a = make_cfg("+experiment=sentiment_repr", "seed=42")
    b = make_cfg("+experiment=sentiment_repr", "seed=42")
    b.tracking.uri = "http://127.0.0.1:1"
    b.paths.cache_dir = "/elsewhere"
    c = make_cfg("+experiment=sentiment_repr", "seed=43")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)

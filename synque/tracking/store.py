"""Where runs go: the tracking URI, the store's connection, one experiment per task."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from synque import SynqueError

TAG = "synque."

# MLflow's own retry settings for a tracking server, applied only where the user set nothing.
# Why set them at all: a sweep at scale must ride out a server restart (mlflow + postgres
# back in ~10-20 s) or a short outage instead of failing hundreds of jobs, and the window
# must not shift with a future MLflow default. 7 retries with backoff factor 2 sleep about
# 0, 4, 8, 16, 32, 64, 120 s (urllib3 caps one sleep at 120 s): a ~4 min outage is survived.
# Connection errors and 408/429/500/502/503/504 are retried, 401/403 are not (see
# `_refused`). Each try may take 120 s before it counts as failed; synque's requests are small.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}


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


def apply_http_defaults() -> None:
    """Fill in `HTTP_DEFAULTS` for variables the user left unset (read per request)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def redact(text: str) -> str:
    """`text` without the tracking password or a URI's user:password part."""
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if password:
        text = text.replace(password, "***")
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


def _refused(exc: BaseException) -> int | None:
    """401 or 403 when a server refused the request's credentials, else None."""
    if not isinstance(exc, MlflowException):
        return None
    code = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}.get(str(exc.error_code))
    if code is None and exc.get_http_status_code() in (401, 403):
        code = exc.get_http_status_code()
    return code


def refused_error(uri: str, exc: BaseException) -> SynqueError | None:
    """The one-line error for a refused request (never the password), None for others."""
    code = _refused(exc)
    if code is None:
        return None
    return SynqueError(
        f"tracking: MLflow at {redact(uri)} refused the credentials (HTTP {code}); "
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )


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
    if uri.startswith(("http://", "https://")):
        apply_http_defaults()
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # unreachable server, bad URI, refused credentials
        if (refused := refused_error(uri, exc)) is not None:
            raise refused from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynqueError(
            f"tracking: cannot reach MLflow at {redact(uri)}: {redact(first)[:200]}"
        ) from None
    return client


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id for `name`, created with artifacts beside a local store."""
    try:
        return _ensure_experiment(client, name)
    except MlflowException as exc:  # e.g. a user who may read but not create experiments
        if (refused := refused_error(client.tracking_uri, exc)) is not None:
            raise refused from None
        raise


def _ensure_experiment(client: MlflowClient, name: str) -> str:
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
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            # Parallel jobs against a server have no shared lock: one of them wins
            # the unique name, and the others take the experiment it created.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def experiment_name(task_name: str) -> str:
    return f"synque-{task_name}"

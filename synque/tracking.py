"""MLflow tracking per DESIGN's schema: one parent run per Hydra job, a child per candidate set.

Why a class: every stage needs the same lifecycle (skip a finished config hash, mark stale
RUNNING runs FAILED, log params/config/datasets, never leave a run RUNNING), and writing it
once keeps the schema identical across stages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from filelock import FileLock
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from synque import SynqueError
from synque.config import config_hash, flat_params, to_container
from synque.tasks import NO_GROUP

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


def content_digest(texts: list[str]) -> str:
    """Order-sensitive digest of a list of texts (short, as MLflow shows digests)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """A `kill` (SIGTERM) unwinds like Ctrl-C, so the run is closed as FAILED, not RUNNING."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a launcher's worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class StageRun:
    """Lifecycle of one stage job: `with StageRun(cfg, ...) as job: with job.child(...)`."""

    cfg: DictConfig
    stage: str
    task: str
    tags: dict[str, str] = field(default_factory=dict)
    dataset: str = "all"
    group: str = NO_GROUP

    def __post_init__(self) -> None:
        self.client = connect(self.cfg)
        self.experiment_id = ensure_experiment(self.client, experiment_name(self.task))
        self.hash = config_hash(self.cfg)
        self.force = bool(OmegaConf.select(self.cfg, "force", default=False))
        seed = OmegaConf.select(self.cfg, "seed", default=None)
        self.base_tags = {
            f"{TAG}stage": self.stage,
            f"{TAG}task": self.task,
            f"{TAG}seed": "none" if seed is None else str(seed),
            **{k if k.startswith(TAG) else TAG + k: str(v) for k, v in self.tags.items()},
        }
        self.run: Run | None = None
        self.children_logged = 0
        self.children_skipped = 0

    # --- queries -----------------------------------------------------------------------
    def _search(self, filter_string: str, max_results: int = 5000) -> list[Run]:
        return self.client.search_runs(
            [self.experiment_id], filter_string=filter_string, max_results=max_results
        )

    def finished_run(self) -> Run | None:
        """A FINISHED parent run with this config hash, if any (then the job is skipped)."""
        if self.force:
            return None
        runs = self._search(
            f"tags.`{TAG}config_hash` = '{self.hash}' and tags.`{TAG}role` = 'parent' "
            "and attributes.status = 'FINISHED'",
            max_results=1,
        )
        return runs[0] if runs else None

    def finished_children(self) -> dict[tuple[str, str], Run]:
        """Children of earlier attempts of this job that finished: resumable work."""
        if self.force:
            return {}
        runs = self._search(
            f"tags.`{TAG}job_hash` = '{self.hash}' and tags.`{TAG}role` = 'child' "
            f"and tags.`{TAG}stage` = '{self.stage}' and attributes.status = 'FINISHED'"
        )
        return {(r.data.tags[f"{TAG}group"], r.data.tags[f"{TAG}dataset"]): r for r in runs}

    def _close_stale_runs(self) -> None:
        """Runs of this config left RUNNING by a killed process are marked FAILED."""
        host = socket.gethostname()
        for run in self._search(
            f"tags.`{TAG}job_hash` = '{self.hash}' and attributes.status = 'RUNNING'"
        ):
            tags = run.data.tags
            pid = int(tags.get(f"{TAG}pid", "0") or 0)
            if tags.get(f"{TAG}host") == host and pid and _alive(pid) and pid != os.getpid():
                continue
            self.client.set_tag(run.info.run_id, f"{TAG}error", "process died while running")
            self.client.set_terminated(run.info.run_id, status="FAILED")

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> StageRun:
        self._close_stale_runs()
        self._signals = _sigterm_as_exception()
        self._signals.__enter__()
        seed = self.base_tags[f"{TAG}seed"]
        name = f"{self.stage}-{self.task}" + (f"-seed{seed}" if seed != "none" else "")
        self.run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=name,
            tags={
                **self.base_tags,
                f"{TAG}dataset": self.dataset,
                f"{TAG}group": self.group,
                f"{TAG}role": "parent",
                f"{TAG}config_hash": self.hash,
                f"{TAG}job_hash": self.hash,
                f"{TAG}pid": str(os.getpid()),
                f"{TAG}host": socket.gethostname(),
            },
        )
        self._t0 = time.perf_counter()
        mlflow.log_params(flat_params(self.cfg))
        mlflow.log_dict(to_container(self.cfg), "config.yaml")  # the full resolved config
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if mlflow.active_run() is not None:
                mlflow.log_metrics(
                    {
                        "children_logged": self.children_logged,
                        "children_skipped": self.children_skipped,
                        "stage_seconds": time.perf_counter() - self._t0,
                    }
                )
            if exc is not None:
                mlflow.set_tag(f"{TAG}error", _error_line(exc))
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run(status="FINISHED" if exc is None else "FAILED")
            self._signals.__exit__(None, None, None)
        return False

    @contextlib.contextmanager
    def child(
        self, dataset: str, group: str = NO_GROUP, tags: Mapping[str, str] | None = None
    ) -> Iterator[Run]:
        """A nested run for one candidate set; FAILED (with the error) if the body raises."""
        child_hash = config_hash(self.cfg, {"group": group, "dataset": dataset})
        run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=f"{dataset}" + ("" if group == NO_GROUP else f"@{group}"),
            nested=True,
            tags={
                **self.base_tags,
                **{k if k.startswith(TAG) else TAG + k: str(v) for k, v in (tags or {}).items()},
                f"{TAG}dataset": dataset,
                f"{TAG}group": group,
                f"{TAG}role": "child",
                f"{TAG}config_hash": child_hash,
                f"{TAG}job_hash": self.hash,
                f"{TAG}pid": str(os.getpid()),
                f"{TAG}host": socket.gethostname(),
            },
        )
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tag(f"{TAG}error", _error_line(exc))
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")
        self.children_logged += 1


def log_dataset(
    frame: pd.DataFrame,
    name: str,
    context: str,
    source: str | Path,
    digest: str | None = None,
    targets: str | None = None,
) -> None:
    """Register a dataset as a run input so lineage shows in the MLflow UI."""
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.data.sources import LocalArtifactDatasetSource

    if digest is None:
        digest = content_digest(frame.astype(str).agg("\x1f".join, axis=1).tolist())
    dataset = from_pandas(
        frame,
        source=LocalArtifactDatasetSource(str(source)),
        name=name,
        digest=digest,
        targets=targets,
    )
    mlflow.log_input(dataset, context=context)


def log_inputs(
    task: Any,
    group: str,
    name: str,
    synth: pd.DataFrame,
    real: pd.DataFrame,
    seed: int,
    real_context: str = "real",
) -> None:
    """Register a child run's synthetic set and its real data (sample or test set)."""
    log_dataset(
        synth,
        name=name,
        context="synthetic",
        source=task.candidate_path(group, name),
        digest=content_digest(synth.text.tolist()),
        targets="label" if "label" in synth else None,
    )
    is_test = real_context == "test"
    columns = ["text", "label"] if is_test and "label" in real else ["text"]
    log_dataset(
        real[columns],
        name=f"real-{real_context}-{group}" + ("" if is_test else f"-seed{seed}"),
        context=real_context,
        source=task.test_path(group) if is_test else task.real_sample_source(group, seed),
        digest=content_digest(real.text.tolist()),
        targets="label" if "label" in columns else None,
    )


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """Log a DataFrame as a CSV or parquet artifact (by extension)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), None if parent == "." else parent)


def search_stage_runs(
    client: MlflowClient, task: str, stages: list[str], finished_only: bool = True
) -> list[Run]:
    """All child runs of the given stages of a task (what correlate and select read)."""
    exp = client.get_experiment_by_name(experiment_name(task))
    if exp is None:
        return []
    runs: list[Run] = []
    for stage in stages:  # tag filters do not support IN
        flt = f"tags.`{TAG}role` = 'child' and tags.`{TAG}stage` = '{stage}'"
        if finished_only:
            flt += " and attributes.status = 'FINISHED'"
        token = None
        while True:
            page = client.search_runs(
                [exp.experiment_id], filter_string=flt, max_results=5000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
    return runs


def _newest(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Keep the newest run per key (a forced re-run supersedes the older one)."""
    if frame.empty:
        return frame
    return frame.sort_values("start_time").drop_duplicates(keys, keep="last").reset_index(drop=True)


def proxy_values(client: MlflowClient, task: str, stages: list[str]) -> pd.DataFrame:
    """Long table of proxy values read back from MLflow.

    Columns: proxy (metric, or `metric@variant` when several variants were logged), metric,
    variant, higher_is_better, stage, group, dataset, seed, value, run_id, start_time.
    A run says which of its metrics are proxies with its `synque.proxy` tag.
    """
    rows = []
    for run in search_stage_runs(client, task, stages):
        tags, metrics = run.data.tags, run.data.metrics
        for metric in filter(None, tags.get(f"{TAG}proxy", "").split(",")):
            if metric not in metrics:
                continue
            hib = tags.get(f"{TAG}higher_is_better.{metric}", "True") == "True"
            rows.append(
                {
                    "metric": metric,
                    "variant": tags.get(f"{TAG}variant.{metric}", "default"),
                    "higher_is_better": hib,
                    "stage": tags[f"{TAG}stage"],
                    "group": tags[f"{TAG}group"],
                    "dataset": tags[f"{TAG}dataset"],
                    "seed": tags[f"{TAG}seed"],
                    "value": metrics[metric],
                    "run_id": run.info.run_id,
                    "start_time": run.info.start_time,
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = _newest(frame, ["metric", "variant", "group", "dataset", "seed"])
    n_variants = frame.groupby("metric")["variant"].nunique()
    frame["proxy"] = [
        m if n_variants[m] == 1 else f"{m}@{v}"
        for m, v in zip(frame.metric, frame.variant, strict=True)
    ]
    return frame


def logged_proxies(
    client: MlflowClient, task: str, stage_cfg: DictConfig, reader: str
) -> pd.DataFrame:
    """Proxy values a reader stage (correlate, select) works on: its stages, its seeds."""
    proxies = proxy_values(client, task, list(stage_cfg.proxy_stages))
    if proxies.empty:
        raise SynqueError(
            f"{reader}: no proxy runs logged for task {task} in {client.tracking_uri} "
            f"(run e.g. {task}_repr first)"
        )
    seeds = stage_cfg.get("seeds")
    if seeds:
        proxies = proxies[proxies.seed.isin([str(s) for s in seeds])]
        if proxies.empty:
            raise SynqueError(f"{reader}: no proxy runs for seeds {list(seeds)}")
    return proxies


def performance_values(client: MlflowClient, task: str) -> pd.DataFrame:
    """Task performance of each candidate set: columns source, group, dataset, seed, value."""
    rows = []
    for run in search_stage_runs(client, task, ["train"]):
        tags = run.data.tags
        if "task_performance" not in run.data.metrics:
            continue
        rows.append(
            {
                "source": tags.get(f"{TAG}performance_source", "trained"),
                "group": tags[f"{TAG}group"],
                "dataset": tags[f"{TAG}dataset"],
                "seed": tags[f"{TAG}seed"],
                "value": run.data.metrics["task_performance"],
                "start_time": run.info.start_time,
            }
        )
    frame = pd.DataFrame(rows)
    return _newest(frame, ["source", "group", "dataset", "seed"]) if not frame.empty else frame

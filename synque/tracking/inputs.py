"""Dataset inputs and table artifacts of a run (lineage visible in the MLflow UI).

MLflow's dataset constructors and `mlflow.log_table` take pandas; synque's tables are
polars. The conversion happens here, once, at that boundary.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from mlflow.exceptions import MlflowException

#: How a store reports that a row another job just wrote makes ours a duplicate
#: (PostgreSQL, SQLite, MySQL wording, as relayed by a tracking server).
_DUPLICATE_MARKERS = ("duplicate key", "UNIQUE constraint failed", "Duplicate entry")


def content_digest(texts: list[str]) -> str:
    """Order-sensitive digest of a list of texts (short, as MLflow shows digests)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _pandas(frame: Any) -> Any:
    return frame.to_pandas() if isinstance(frame, pl.DataFrame) else frame


def log_dataset(
    frame: Any,
    name: str,
    context: str,
    source: str | Path,
    digest: str | None = None,
    targets: str | None = None,
) -> None:
    """Register a dataset (polars or pandas) as a run input so lineage shows in the MLflow UI."""
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.data.sources import LocalArtifactDatasetSource

    frame = _pandas(frame)
    if digest is None:
        digest = content_digest(frame.astype(str).agg("\x1f".join, axis=1).tolist())
    dataset = from_pandas(
        frame,
        source=LocalArtifactDatasetSource(str(source)),
        name=name,
        digest=digest,
        targets=targets,
    )
    log_input_retrying(dataset, context)


def log_input_retrying(dataset: Any, context: str, attempts: int = 4) -> None:
    """`mlflow.log_input`, retried when a parallel job registered the same dataset first.

    Why: the SQL store looks for an existing (experiment, name, digest) row and inserts one
    when it finds none, without a lock. Two jobs of a server-backed sweep that log the same
    real sample race there, and the loser's whole transaction is rolled back with a unique
    violation. On the retry the store finds the winner's row and only links it to the run.
    """
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            duplicate = any(marker in str(exc) for marker in _DUPLICATE_MARKERS)
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def log_inputs(
    task: Any,
    group: str,
    name: str,
    synth: pl.DataFrame,
    real: pl.DataFrame,
    seed: int,
    real_context: str = "real",
) -> None:
    """Register a child run's synthetic set and its real data (sample or test set)."""
    log_dataset(
        synth,
        name=name,
        context="synthetic",
        source=task.candidate_path(group, name),
        digest=content_digest(synth["text"].to_list()),
        targets="label" if "label" in synth.columns else None,
    )
    is_test = real_context == "test"
    columns = ["text", "label"] if is_test and "label" in real.columns else ["text"]
    log_dataset(
        real.select(columns),
        name=f"real-{real_context}-{group}" + ("" if is_test else f"-seed{seed}"),
        context=real_context,
        source=task.test_path(group) if is_test else task.real_sample_source(group, seed),
        digest=content_digest(real["text"].to_list()),
        targets="label" if "label" in columns else None,
    )


def log_table(frame: Any, artifact_file: str) -> None:
    """Log a polars (or pandas) table as a CSV or parquet artifact (by extension)."""
    if not isinstance(frame, pl.DataFrame):
        frame = pl.from_pandas(frame)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        if path.suffix == ".parquet":
            frame.write_parquet(path)
        else:
            frame.write_csv(path)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), None if parent == "." else parent)


def log_mlflow_table(frame: Any, artifact_file: str) -> None:
    """Log a polars (or pandas) table with `mlflow.log_table` (`artifact_file` ends in .json).

    Why besides the CSV files: MLflow lists such a table on the run (tag
    `mlflow.loggedArtifacts`), shows it in the UI's table views, and
    `mlflow.load_table(artifact_file, run_ids=[...])` concatenates it across runs. MLflow
    writes pandas' JSON (orient "split"): floats keep 10 decimals, nulls become NaN, and
    reading it back infers types (a column of seed strings comes back as integers). The
    table must be new in the run: MLflow appends to an existing `artifact_file`.
    """
    with warnings.catch_warnings():
        # MLflow 3.17 looks for image columns with `select_dtypes(include=["object"])`, which
        # pandas 3 answers with a deprecation warning per call when a table has strings
        warnings.filterwarnings("ignore", message=".*'str' dtypes are included by select_dtypes")
        mlflow.log_table(_pandas(frame), artifact_file)

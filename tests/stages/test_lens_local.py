"""The `lens` stage with the local SmolLM2 judge, for real, and killed midway then restarted."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import DATA, needs_data, needs_smollm2

SLICE = [
    "+experiment=sentiment_lens",
    "llm=local",
    "task.max_candidates=1",
    "task.max_examples=40",
    "task.max_real=40",
    "stage.max_synthetic=6",
    "stage.max_real=6",
    "rubric.n_points=3",
    "rubric.n_samples=5",
    "rubric.max_tokens=80",
    "progress=false",
]


def cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow  # ~5 min on a shared 2-core CPU
@needs_data
@needs_smollm2
def test_local_judge_killed_and_restarted(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache_dir = tmp_path / "cache"
    env = {
        **os.environ,
        "SYNQUE_DATA": str(DATA),
        "SYNQUE_CACHE": str(cache_dir),
        "MLFLOW_TRACKING_URI": uri,
    }
    cmd = [sys.executable, "-m", "synque.run", *SLICE, f"paths.output_dir={tmp_path / 'out'}"]
    cache = cache_dir / "llm_cache.sqlite"

    # 1) start, and SIGKILL once the rubric and part of the judgments are cached
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and cache_rows(cache) < 3 + 10:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_before = cache_rows(cache)
    assert rows_before >= 13

    # 2) restart: completes, repeats no finished call
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows_after = cache_rows(cache)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("synque-sentiment")
    runs = client.search_runs([exp.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}  # the killed run was closed
    parents = [r for r in runs if r.data.tags["synque.role"] == "parent"]
    assert sorted(r.info.status for r in parents) == ["FAILED", "FINISHED"]
    restart = next(r for r in parents if r.info.status == "FINISHED").data.metrics
    assert restart["llm_cache_hits"] > 0
    assert restart["llm_calls"] == rows_after - rows_before  # every new call is a new answer
    judge = [
        r
        for r in runs
        if r.data.tags["synque.stage"] == "lens"
        and r.data.tags["synque.role"] == "child"
        and r.info.status == "FINISHED"
    ]
    assert len(judge) == 1
    metrics = judge[0].data.metrics
    assert 0.0 <= metrics["lens"] <= 1.0 and 0.0 <= metrics["lens_expected"] <= 1.0
    assert metrics["n_judged_synthetic"] == 6 and metrics["n_judged_real"] == 6
    rubric_runs = [r for r in runs if r.data.tags["synque.stage"] == "rubric"]
    assert any(r.info.status == "FINISHED" for r in rubric_runs)
    assert judge[0].data.tags["synque.rubric_run"] in {r.info.run_id for r in rubric_runs}
    arts = {a.path for a in client.list_artifacts(judge[0].info.run_id)}
    assert {"judgments.parquet", "rubric.json"} <= arts

"""A real `mlflow server` on 127.0.0.1: a sweep logs to it and correlate reads from it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import needs_data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@needs_data
@pytest.mark.server
def test_sweep_and_correlate_through_server(cli, mlflow_server: str) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    tiny = ["debug=default", "task.max_groups=1", "task.max_candidates=3", "task.max_examples=30"]
    cli("+experiment=text2sql_recorded", env=env)
    cli("+experiment=text2sql_repr", "-m", "seed=42,43", *tiny, env=env)
    proc = cli("+experiment=text2sql_correlate", "stage.bootstrap=20", env=env)
    assert "mdm" in proc.stdout
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("synque-text2sql")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    stages = {r.data.tags["synque.stage"] for r in runs}
    assert stages == {"train", "repr", "correlate"}
    assert all(r.info.status == "FINISHED" for r in runs)
    corr = next(r for r in runs if r.data.tags["synque.stage"] == "correlate")
    assert "summary.csv" in [f.path for f in client.list_artifacts(corr.info.run_id)]


def test_unreachable_server_is_one_line_error(cli) -> None:
    proc = cli(
        "+experiment=sentiment_recorded",
        env={
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        },
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("synque: error: tracking: cannot reach")

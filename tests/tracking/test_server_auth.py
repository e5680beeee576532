"""The launch script's server: basic auth refuses strangers, keeps secrets, survives restarts.

Every server here comes from `launch/tracking_server.sh` (PostgreSQL + MLflow's basic-auth
app unless a test says otherwise) through `tests/fakes/tracking_server.py`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.conftest import DATA, needs_data
from tests.fakes.tracking_server import (
    SCRIPT,
    Server,
    running_server,
    server_store,
    start_server,
    unavailable,
)

TINY = ["debug=default", "task.max_groups=1", "task.max_candidates=3", "task.max_examples=30"]
SWEEP = ("+experiment=text2sql_repr", "-m", "seed=42,43", *TINY)
REFUSED = (
    "synque: error: tracking: MLflow at {uri} refused the credentials (HTTP 401); "
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
)


@pytest.fixture
def tracking_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A postgres + basic-auth server; the test process itself holds no credentials."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    with running_server(tmp_path) as server:
        yield server


def request(uri: str, method: str, path: str, body: dict | None, auth: tuple[str, str] | None):
    """HTTP status of one raw request (no client library between the test and the server)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(uri + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if auth is not None:
        req.add_header(
            "Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def all_runs(server: Server) -> list:
    with server.authorised():
        client = MlflowClient(server.uri)
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        return client.search_runs(ids, run_view_type=ViewType.ALL, max_results=5000)


@pytest.mark.server
@needs_data
def test_missing_or_wrong_credentials_are_refused_and_write_nothing(
    cli: Callable[..., subprocess.CompletedProcess], tracking_server: Server
) -> None:
    server = tracking_server
    writes = [
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": "intruder"}),
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"}),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/intruder/x.txt", None),
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=10", None),
    ]
    for auth in (None, ("admin", "not-the-password-1"), ("nobody", server.password)):
        for method, path, body in writes:
            status = request(server.uri, method, path, body, auth)
            assert status == 401, f"{method} {path} with {auth and auth[0]}: HTTP {status}"

    wrong = {**server.env, "MLFLOW_TRACKING_PASSWORD": "not-the-password-2"}
    for env in ({"MLFLOW_TRACKING_URI": server.uri}, wrong):
        proc = cli("+experiment=sentiment_recorded", env=env, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1] == REFUSED.format(uri=server.uri)
        assert "not-the-password-2" not in proc.stderr + proc.stdout

    with server.authorised():
        client = MlflowClient(server.uri)
        names = [e.name for e in client.search_experiments(view_type=ViewType.ALL)]
    assert names == ["Default"]
    assert all_runs(server) == []
    assert [p for p in (server.store / "artifacts").rglob("*") if p.is_file()] == []


def _texts_of_runs(server: Server, download_to: Path) -> tuple[int, list[str]]:
    """(number of runs, every param/tag/metric key and artifact file as text)."""
    runs = all_runs(server)
    texts: list[str] = []
    with server.authorised():
        client = MlflowClient(server.uri)
        for run in runs:
            texts.append(run.info.run_name or "")
            texts += [f"{k}={v}" for k, v in run.data.params.items()]
            texts += [f"{k}={v}" for k, v in run.data.tags.items()]
            texts += list(run.data.metrics)
            folder = download_to / run.info.run_id
            folder.mkdir(parents=True)
            client.download_artifacts(run.info.run_id, "", str(folder))
            texts += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]
    return len(runs), texts


@pytest.mark.server
@needs_data
def test_no_password_or_api_key_reaches_runs_logs_or_store(
    cli: Callable[..., subprocess.CompletedProcess], tracking_server: Server, tmp_path: Path
) -> None:
    server = tracking_server
    api_key = "sk-secret-" + os.urandom(12).hex()
    cli("+experiment=sentiment_recorded", env={**server.env, "OPENAI_API_KEY": api_key})

    n_runs, texts = _texts_of_runs(server, tmp_path / "downloaded")
    assert n_runs > 1 and any("synque.stage=train" in t for t in texts)
    basic = base64.b64encode(f"admin:{server.password}".encode()).decode()
    secrets = {"password": server.password, "api key": api_key, "basic header": basic}
    for name, secret in secrets.items():
        assert not [t for t in texts if secret in t], f"the {name} is in a run"

    logs = server.logs()
    assert "POST /api/2.0/mlflow/runs/create" in logs  # the scan reads the request log
    files = [p for root in (server.store, tmp_path / "outputs") for p in root.rglob("*")]
    files = [p for p in files if p.is_file()]
    assert len(files) > 100  # postgres's cluster, the artifacts, the logs, Hydra's outputs
    for path in files:
        content = path.read_bytes()
        for name, secret in secrets.items():
            assert secret.encode() not in content, f"the {name} is in {path}"


def _sweep(tmp_path: Path, cache: Path, env: dict[str, str]) -> subprocess.Popen:
    """The sweep as `cli` runs it, in the background (its output goes to tmp_path)."""
    out = open(tmp_path / "sweep.log", "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "synque.run", *SWEEP, f"paths.output_dir={tmp_path / 'outputs'}"],
        cwd=tmp_path,
        env={**os.environ, "SYNQUE_DATA": str(DATA), "SYNQUE_CACHE": str(cache), **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _wait_for_finished(server: Server, role: str, proc: subprocess.Popen, log: Path) -> set[str]:
    """Ids of FINISHED runs once the first FINISHED run of `role` exists."""
    deadline = time.time() + 600
    while time.time() < deadline:
        finished = [r for r in all_runs(server) if r.info.status == "FINISHED"]
        if any(r.data.tags.get("synque.role") == role for r in finished):
            return {r.info.run_id for r in finished}
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before a {role} run finished:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"no {role} run finished in 600 s")


@pytest.mark.server
@pytest.mark.slow
@needs_data
@pytest.mark.parametrize(
    ("moment", "role", "retries"),
    [
        ("mid-job", "child", None),  # a job between two candidate sets
        ("between jobs", "parent", None),  # seed 42 done, seed 43 starting
        ("outage beyond the retries", "child", "1"),  # the job dies: runs left RUNNING
    ],
)
def test_restart_during_a_sweep_loses_nothing(
    cli: Callable[..., subprocess.CompletedProcess],
    tracking_server: Server,
    tmp_path: Path,
    shared_cache: Path,
    moment: str,
    role: str,
    retries: str | None,
) -> None:
    server = tracking_server
    env = dict(server.env)
    if retries is not None:
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = retries
    proc = _sweep(tmp_path, shared_cache, env)
    try:
        finished_before = _wait_for_finished(server, role, proc, tmp_path / "sweep.log")
        assert proc.poll() is None, "the sweep finished before the server stopped"
        server.stop()
        if retries is not None:  # the sweep gives up while the server is down
            assert proc.wait(timeout=300) != 0
        else:
            time.sleep(3)
        server.start()
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "sweep.log").read_text()
    assert "Retrying (Retry(" in log, "the sweep never met the stopped server"
    if retries is None:
        assert rc == 0, f"the sweep did not ride out the restart ({moment}):\n{log[-3000:]}"

    # what the dead job left RUNNING (nothing, when it died between two runs: a race with
    # the stop), the rerun must close FAILED
    left_running = {r.info.run_id for r in all_runs(server) if r.info.status == "RUNNING"}
    cli(*SWEEP, env=server.env)  # the same sweep again: resumes, skips what finished

    runs = all_runs(server)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    status = {r.info.run_id: r.info.status for r in runs}
    assert {status[i] for i in left_running} <= {"FAILED"}, left_running
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert finished_before <= {r.info.run_id for r in finished}, "a finished run was lost"

    def key(run) -> tuple[str, ...]:
        tags = run.data.tags
        names = ("stage", "role", "group", "dataset", "seed")
        return tuple(tags.get(f"synque.{n}", "") for n in names)

    counts = Counter(key(r) for r in finished)
    assert {k for k, n in counts.items() if n > 1} == set(), counts
    assert {key(r) for r in runs} == set(counts), "a (stage, dataset, seed) has no FINISHED run"
    roles = Counter(k[1] for k in counts)
    assert roles == {"parent": 2, "child": 6}, counts
    assert {k[4] for k in counts} == {"42", "43"}


def test_script_refuses_auth_without_a_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {"BACKEND": "sqlite", "PYTHON": sys.executable, "PORT": "1"}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start", str(tmp_path / "store")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "MLFLOW_TRACKING_PASSWORD" in proc.stderr and "AUTH=off" in proc.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.server
def test_sqlite_server_without_auth_starts_logs_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if (reason := unavailable("sqlite", auth=False)) is not None:
        pytest.skip(reason)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with server_store(tmp_path) as store, start_server(store, "sqlite", auth=False) as server:
        client = MlflowClient(server.uri)
        run = client.create_run(client.create_experiment("plain"))
        client.log_metric(run.info.run_id, "m", 1.0)
        client.set_terminated(run.info.run_id)
        assert server.running()
        assert (store / "mlflow.db").exists() and not (store / "pg").exists()
        server.stop()
        assert not server.running()
        server.start()
        assert MlflowClient(server.uri).get_run(run.info.run_id).data.metrics == {"m": 1.0}

"""Sweeps: one `synque.sweep_id` per `-m` command on every launcher, Hydra files and logs with
each parent run, parallel jobs that leave one FINISHED run per key, and a sweep killed with
SIGKILL that resumes to the numbers of a sweep that never stopped.

Every test takes its tracking store from the `store` fixture (a factory of empty stores of one
backend), so the same checks run against sqlite and, once a param is added, a server.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from synque.data.task import NO_GROUP
from synque.tracking import StageRun
from synque.tracking import lifecycle as lifecycle_mod
from synque.tracking import sweep as sweep_mod
from synque.tracking.lifecycle import _alive
from synque.tracking.sweep import SWEEP_ENV, SWEEP_FILE, HydraJob, SweepCallback
from tests.conftest import DATA, ROOT, needs_data

TINY = ["debug=default", "task.max_groups=1", "task.max_candidates=3", "task.max_examples=30"]
SEEDS = ["42", "43", "44", "45"]
SWEEP = ["+experiment=text2sql_repr", *TINY, "-m", "seed=" + ",".join(SEEDS)]
N_SETS = 3  # task.max_candidates
HYDRA_FILES = {"hydra/hydra.yaml", "hydra/overrides.yaml", "hydra/run.log"}


# --- stores ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Store:
    """Where a test's jobs log: the tracking URI and any extra environment the jobs need."""

    uri: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def job_env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.uri, "OMP_NUM_THREADS": "1", **self.env}


@pytest.fixture(params=["sqlite"])
def store(
    request: pytest.FixtureRequest,
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Store]]:
    """A factory of empty stores of one backend: `store()` is the test's store, `store("b")`
    another one. `server` starts a PostgreSQL + basic-auth MLflow server per name
    (launch/tracking_server.sh); the test process reads it with the server's credentials."""
    servers: dict[str, Store] = {}
    with contextlib.ExitStack() as stack:

        def make(name: str = "main") -> Store:
            if request.param == "sqlite":
                if name == "main":
                    return Store(tracking_uri)
                return Store(f"sqlite:///{tmp_path / name / 'mlruns' / 'mlflow.db'}")
            if request.param != "server":
                raise ValueError(f"unknown store backend {request.param}")
            if name not in servers:
                from tests.fakes.tracking_server import running_server

                (tmp_path / name).mkdir()
                server = stack.enter_context(running_server(tmp_path / name))
                for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                    monkeypatch.setenv(key, server.env[key])
                servers[name] = Store(server.uri, dict(server.env))
            return servers[name]

        yield make


# --- reading a store back --------------------------------------------------------------------
def runs_of(client: MlflowClient, experiment: str = "synque-text2sql") -> list[Run]:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=5000)


def tag(run: Run, key: str) -> str | None:
    return run.data.tags.get(f"synque.{key}")


def read_artifact(client: MlflowClient, run: Run, path: str) -> str:
    local = client.download_artifacts(run.info.run_id, path)
    return Path(local).read_text()


def check_sweep_store(client: MlflowClient, stage: str = "repr") -> list[Run]:
    """Every (dataset, seed) of the sweep has exactly one FINISHED child, every seed one FINISHED
    parent, nothing is left RUNNING. Returns the stage's runs."""
    runs = [r for r in runs_of(client) if tag(r, "stage") == stage]
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    done = [r for r in runs if r.info.status == "FINISHED"]
    children = Counter(
        (tag(r, "dataset"), tag(r, "seed")) for r in done if tag(r, "role") == "child"
    )
    assert sorted({seed for _, seed in children}) == SEEDS
    assert len(children) == N_SETS * len(SEEDS)
    assert set(children.values()) == {1}, f"duplicated children: {children}"
    parents = Counter(tag(r, "seed") for r in done if tag(r, "role") == "parent")
    assert parents == dict.fromkeys(SEEDS, 1)
    return runs


def check_parent_files(client: MlflowClient, parent: Run, sweep_overrides: list[str]) -> None:
    """A sweep job's parent run carries hydra.yaml, both override lists and the job's log."""
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "hydra")}
    assert files == HYDRA_FILES | {"hydra/sweep.yaml"}
    sweep = yaml.safe_load(read_artifact(client, parent, "hydra/sweep.yaml"))
    assert sweep["sweep_id"] == tag(parent, "sweep_id")
    assert sweep["overrides"][: len(sweep_overrides)] == sweep_overrides
    job_overrides = yaml.safe_load(read_artifact(client, parent, "hydra/overrides.yaml"))
    assert f"seed={tag(parent, 'seed')}" in job_overrides
    assert sweep["job"]["overrides"] == job_overrides
    hydra_cfg = yaml.safe_load(read_artifact(client, parent, "hydra/hydra.yaml"))
    assert hydra_cfg["hydra"]["mode"] == "MULTIRUN"
    assert hydra_cfg["hydra"]["job"]["num"] == sweep["job"]["num"]


def by_parent(runs: list[Run]) -> dict[str, Run]:
    return {r.info.run_id: r for r in runs if tag(r, "role") == "parent"}


def check_children_carry_their_parents_sweep(runs: list[Run]) -> None:
    parents = by_parent(runs)
    for run in runs:
        if tag(run, "role") == "child":
            parent = parents[run.data.tags["mlflow.parentRunId"]]
            assert tag(run, "sweep_id") == tag(parent, "sweep_id")


# --- running jobs ------------------------------------------------------------------------------
def job_env(store: Store, shared_cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SYNQUE_DATA": str(DATA),
        "SYNQUE_CACHE": str(shared_cache),
        "PYTHONPATH": str(ROOT),  # the failing stage below is imported by the job
        **store.job_env(),
    }


def start_sweep(
    args: list[str], store: Store, shared_cache: Path, cwd: Path
) -> subprocess.Popen[str]:
    """`python -m synque.run ...` in its own process group (so a kill reaches its workers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "synque.run", *args, f"paths.output_dir={cwd / 'outputs'}"],
        cwd=cwd,
        env=job_env(store, shared_cache),
        stdout=subprocess.DEVNULL,
        stderr=open(cwd / f"sweep-{time.monotonic_ns()}.err", "w"),  # noqa: SIM115
        text=True,
        start_new_session=True,
    )


def failing_stage(cfg: DictConfig) -> None:
    """A stage that fails half way: one child done, then an error inside the parent run."""
    job = StageRun(cfg, "train", "toy")
    with job:
        with job.child("first"):
            pass
        logging.getLogger("synque").info("half way through seed %s", cfg.seed)
        raise RuntimeError("boom in the stage")


def twin_stage(cfg: DictConfig) -> None:
    """Six slow candidate sets, skipped when FINISHED: what twin jobs of one sweep share."""
    job = StageRun(cfg, "train", "toy")
    if job.finished_run() is not None:
        return
    with job:
        for group, name in job.pending([(NO_GROUP, f"set{i}") for i in range(6)], "twins"):
            with job.child(name, group):
                time.sleep(0.5)


# --- fast checks ---------------------------------------------------------------------------------
def test_tracking_names_resolve_lazily() -> None:
    import synque.tracking as tracking

    for name in tracking.__all__:
        assert getattr(tracking, name) is not None
    with pytest.raises(AttributeError):
        _ = tracking.no_such_name


def test_sweep_id_reaches_jobs_by_every_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State pickled with the callback, the sweep file, the environment, the folder: one id."""
    from omegaconf import OmegaConf

    monkeypatch.delenv(SWEEP_ENV, raising=False)
    master = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path / "sweep")},
                "overrides": {"task": ["a=1", "seed=1,2"]},
                "launcher": {"_target_": "some.Launcher"},
            }
        }
    )
    callback = SweepCallback()
    callback.on_multirun_start(master)
    ident = callback.sweep["sweep_id"]
    assert os.environ[SWEEP_ENV] == ident
    written = yaml.safe_load((tmp_path / "sweep" / SWEEP_FILE).read_text())
    assert written["overrides"] == ["a=1", "seed=1,2"]

    fresh = SweepCallback()  # a launcher that builds its callbacks anew in the worker
    assert fresh._sweep_of(master)["sweep_id"] == ident  # from the file
    (tmp_path / "sweep" / SWEEP_FILE).unlink()
    assert fresh._sweep_of(master)["sweep_id"] == ident  # from the environment
    monkeypatch.delenv(SWEEP_ENV)
    by_dir = fresh._sweep_of(master)["sweep_id"]
    assert by_dir.startswith("dir-") and by_dir == SweepCallback()._sweep_of(master)["sweep_id"]


def test_zombie_counts_as_dead() -> None:
    """A killed worker whose parent has not reaped it yet must not keep its runs RUNNING."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline:  # exited, not reaped: a zombie
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    assert not _alive(proc.pid)
    proc.wait()
    assert not _alive(proc.pid)
    assert _alive(os.getpid())


def test_stage_run_without_hydra_job_logs_no_hydra_files(
    make_cfg: Callable[..., DictConfig], tracking_uri: str
) -> None:
    """Stages called as functions (tests, notebooks) see no job, even after one in-process."""
    sweep_mod._current = HydraJob(
        output_dir=Path("/nowhere"), overrides=(), sweep={"sweep_id": "x"}
    )
    try:
        job = StageRun(make_cfg("+experiment=text2sql_recorded"), "train", "toy")
        assert job.hydra_job is None
        with job:
            pass
        client = MlflowClient(tracking_uri)
        (run,) = runs_of(client, "synque-toy")
        assert tag(run, "sweep_id") is None
        assert client.list_artifacts(run.info.run_id, "hydra") == []
    finally:
        sweep_mod._current = None


@needs_data
def test_single_run_has_no_sweep_id_but_its_files(cli, store: Callable[..., Store]) -> None:
    """A single run (no -m) is not a sweep: no id, but hydra.yaml, overrides and log as usual."""
    main = store()
    cli("+experiment=text2sql_recorded", *TINY, env=main.job_env())
    client = main.client()
    runs = runs_of(client)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    assert all(tag(r, "sweep_id") is None for r in runs)
    (parent,) = by_parent(runs).values()
    assert {f.path for f in client.list_artifacts(parent.info.run_id, "hydra")} == HYDRA_FILES
    hydra_cfg = yaml.safe_load(read_artifact(client, parent, "hydra/hydra.yaml"))
    assert hydra_cfg["hydra"]["mode"] == "RUN"


@needs_data
def test_failed_sweep_jobs_log_their_log(cli, store: Callable[..., Store]) -> None:
    """Jobs that raise inside their parent run: FAILED, one sweep id, the log says why."""
    main = store()
    target = f"stage._target_={__name__}.failing_stage"
    env = {**main.job_env(), "PYTHONPATH": str(ROOT)}  # the job imports `failing_stage`
    proc = cli("-m", "seed=1,2", target, env=env, check=False)
    assert proc.returncode != 0
    client = main.client()
    runs = runs_of(client, "synque-toy")
    assert len(runs) == 4 and not [r for r in runs if r.info.status == "RUNNING"]
    assert {tag(r, "sweep_id") for r in runs} == {tag(runs[0], "sweep_id")} != {None}
    for parent in by_parent(runs).values():
        assert parent.info.status == "FAILED"
        assert tag(parent, "error") == "RuntimeError: boom in the stage"
        check_parent_files(client, parent, ["seed=1,2", target])
        text = read_artifact(client, parent, "hydra/run.log")
        assert f"half way through seed {tag(parent, 'seed')}" in text
        assert "train run FAILED: RuntimeError: boom in the stage" in text
    check_children_carry_their_parents_sweep(runs)


# --- parallel launchers ------------------------------------------------------------------------
LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"],
    # local subprocesses; the folder defaults to <sweep dir>/.submitit/%j
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"],
}


@needs_data
@pytest.mark.slow  # ~1 min each on a shared 2-core CPU: four jobs at once
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("server", marks=pytest.mark.server)], indirect=True
)
def test_parallel_sweep(cli, store: Callable[..., Store], launcher: str) -> None:
    main = store()
    cli(*SWEEP, *LAUNCHERS[launcher], env=main.job_env())
    client = main.client()
    runs = check_sweep_store(client)
    ids = {tag(r, "sweep_id") for r in runs}
    assert len(ids) == 1 and None not in ids, ids
    sweep_overrides = [*SWEEP[:-2], SWEEP[-1]]  # Hydra drops the -m
    for parent in by_parent(runs).values():
        check_parent_files(client, parent, sweep_overrides)
        sweep = yaml.safe_load(read_artifact(client, parent, "hydra/sweep.yaml"))
        assert launcher.split("_")[0] in sweep["launcher"].lower()
    check_children_carry_their_parents_sweep(runs)


# --- a killed sweep ------------------------------------------------------------------------------
def correlate(cli, store: Store) -> tuple[pl.DataFrame, dict[str, float]]:
    """Recorded performance, then correlate: the summary table and the logged metrics."""
    cli("+experiment=text2sql_recorded", *TINY, env=store.job_env())
    cli("+experiment=text2sql_correlate", "stage.bootstrap=20", env=store.job_env())
    client = store.client()
    (run,) = [r for r in runs_of(client) if tag(r, "stage") == "correlate"]
    summary = pl.read_csv(io.StringIO(read_artifact(client, run, "summary.csv")))
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("spearman.")}
    return summary, metrics


def proxy_table(client: MlflowClient) -> dict[tuple[str, str, str], float]:
    """(seed, dataset, proxy) -> value over the FINISHED repr children."""
    table = {}
    for run in runs_of(client):
        child = tag(run, "stage") == "repr" and tag(run, "role") == "child"
        if child and run.info.status == "FINISHED":
            for proxy in tag(run, "proxy").split(","):
                table[(tag(run, "seed"), tag(run, "dataset"), proxy)] = run.data.metrics[proxy]
    return table


@needs_data
@pytest.mark.slow  # ~3 min: a killed sweep, its rerun, a reference sweep, two correlations
def test_killed_sweep_resumes_to_the_numbers_of_an_uninterrupted_one(
    cli, store: Callable[..., Store], shared_cache: Path, tmp_path: Path
) -> None:
    main = store()
    client = main.client()
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    proc = start_sweep([*SWEEP, *joblib], main, shared_cache, tmp_path)
    finished: list[Run] = []
    try:
        deadline = time.time() + 600
        while len(finished) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline, "no child finished in time"
            time.sleep(0.5)
            finished = [
                r
                for r in runs_of(client)
                if tag(r, "role") == "child" and r.info.status == "FINISHED"
            ]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers, no cleanup
        proc.wait()
    killed = runs_of(client)
    assert any(r.info.status == "RUNNING" for r in killed), "the kill left nothing RUNNING"
    finished = [r for r in killed if tag(r, "role") == "child" and r.info.status == "FINISHED"]
    parents = by_parent(killed)
    # finished children of jobs that did not finish: the rerun must skip them, not redo them
    resumable = [
        r for r in finished if parents[r.data.tags["mlflow.parentRunId"]].info.status != "FINISHED"
    ]

    cli(*SWEEP, *joblib, env=main.job_env())  # the same sweep, again
    runs = check_sweep_store(client)
    after = {r.info.run_id: r for r in runs}
    assert all(after[r.info.run_id].info.status == "FINISHED" for r in finished)
    new_parents = [p for p in by_parent(runs).values() if p.info.run_id not in parents]
    assert sum(p.data.metrics["children_skipped"] for p in new_parents) == len(resumable)
    assert {r.info.status for r in runs} <= {"FINISHED", "FAILED"}
    assert len({tag(r, "sweep_id") for r in runs}) == 2  # the killed sweep and its rerun
    check_children_carry_their_parents_sweep(runs)
    summary, metrics = correlate(cli, main)

    reference = store("reference")  # a fresh store, a sweep that never stopped
    cli(*SWEEP, env=reference.job_env())
    check_sweep_store(reference.client())
    ref_summary, ref_metrics = correlate(cli, reference)

    assert proxy_table(client) == proxy_table(reference.client())
    assert metrics == ref_metrics and metrics
    assert summary.equals(ref_summary)


# --- twin jobs: one config hash, two live processes ------------------------------------------
def make_twin(client: MlflowClient, job: StageRun, start_time: int | None = None) -> str:
    """A RUNNING parent of `job`'s config held by a live process (this one's parent)."""
    run = client.create_run(
        job.experiment_id,
        start_time=start_time,
        tags={
            "synque.role": "parent",
            "synque.stage": job.stage,
            "synque.config_hash": job.hash,
            "synque.job_hash": job.hash,
            "synque.host": socket.gethostname(),
            "synque.pid": str(os.getppid()),
        },
    )
    return run.info.run_id


def finish_twin_later(client: MlflowClient, job: StageRun, twin: str, names: list[str]) -> None:
    """In a second, the twin logs its children and FINISHES (as another process would)."""

    def finish() -> None:
        for name in names:
            child = client.create_run(
                job.experiment_id,
                tags={
                    "synque.role": "child",
                    "synque.stage": job.stage,
                    "synque.group": NO_GROUP,
                    "synque.dataset": name,
                    "synque.job_hash": job.hash,
                    "mlflow.parentRunId": twin,
                },
            )
            client.set_terminated(child.info.run_id, "FINISHED")
        client.set_terminated(twin, "FINISHED")

    threading.Timer(1.0, finish).start()


def test_finished_run_waits_for_a_live_twin(
    make_cfg: Callable[..., DictConfig], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle_mod, "TWIN_POLL_S", 0.1)
    job = StageRun(make_cfg("+experiment=text2sql_recorded"), "train", "toy")
    client = MlflowClient(tracking_uri)
    twin = make_twin(client, job)
    finish_twin_later(client, job, twin, ["a"])
    start = time.perf_counter()
    done = job.finished_run()
    assert done is not None and done.info.run_id == twin
    assert time.perf_counter() - start >= 0.9


def test_a_dead_twin_is_not_waited_for(
    make_cfg: Callable[..., DictConfig], tracking_uri: str
) -> None:
    job = StageRun(make_cfg("+experiment=text2sql_recorded"), "train", "toy")
    client = MlflowClient(tracking_uri)
    twin = make_twin(client, job)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    client.set_tag(twin, "synque.pid", str(proc.pid))
    assert job.finished_run() is None
    with job:  # the dead twin's run is closed as stale, this job does the work
        pass
    assert client.get_run(twin).info.status == "FAILED"


def test_younger_twin_yields_and_ends_killed(
    make_cfg: Callable[..., DictConfig], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both passed `finished_run` at once: the younger waits, finds nothing left, KILLED."""
    monkeypatch.setattr(lifecycle_mod, "TWIN_POLL_S", 0.1)
    job = StageRun(make_cfg("+experiment=text2sql_recorded"), "train", "toy")
    assert job.finished_run() is None
    client = MlflowClient(tracking_uri)
    twin = make_twin(client, job, start_time=int(time.time() * 1000) - 60_000)
    names = ["a", "b"]
    finish_twin_later(client, job, twin, names)
    with job:
        for group, name in job.pending([(NO_GROUP, n) for n in names], "twins"):
            with job.child(name, group):
                pass
    own = client.get_run(job.run.info.run_id)
    assert own.info.status == "KILLED"
    assert own.data.tags["synque.duplicate_of"] == twin
    assert own.data.metrics["children_skipped"] == len(names)


def test_interrupted_while_waiting_ends_failed(
    make_cfg: Callable[..., DictConfig], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM while waiting for a twin (inside `__enter__`): FAILED, not RUNNING."""
    job = StageRun(make_cfg("+experiment=text2sql_recorded"), "train", "toy")
    assert job.finished_run() is None
    client = MlflowClient(tracking_uri)
    make_twin(client, job, start_time=int(time.time() * 1000) - 60_000)

    def interrupted(self: StageRun, twins: list[Run]) -> None:
        raise KeyboardInterrupt("terminated by signal 15")

    monkeypatch.setattr(StageRun, "_wait_for", interrupted)
    with pytest.raises(KeyboardInterrupt), job:
        pass
    own = client.get_run(job.run.info.run_id)
    assert own.info.status == "FAILED"
    assert own.data.tags["synque.error"] == "KeyboardInterrupt: terminated by signal 15"


@needs_data
def test_parallel_twin_jobs_do_the_work_once(cli, store: Callable[..., Store]) -> None:
    """`progress` is not in the config hash: a joblib sweep over it runs one config twice."""
    main = store()
    env = {**main.job_env(), "PYTHONPATH": str(ROOT)}
    target = f"stage._target_={__name__}.twin_stage"
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    cli("-m", "progress=true,false", target, *joblib, env=env)
    runs = runs_of(main.client(), "synque-toy")
    children = Counter(tag(r, "dataset") for r in runs if tag(r, "role") == "child")
    assert children == {f"set{i}": 1 for i in range(6)}
    assert all(r.info.status == "FINISHED" for r in runs if tag(r, "role") == "child")
    parents = by_parent(runs)
    (done,) = [p for p in parents.values() if p.info.status == "FINISHED"]
    for other in parents.values():  # a twin that started with the other: it yielded
        if other is not done:
            assert other.info.status == "KILLED"
            assert tag(other, "duplicate_of") == done.info.run_id

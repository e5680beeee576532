"""Logging cost of the tracking stores on this machine (not a test).

Why: a sweep on many workers writes every child run to one store; this prints, side by
side, runs per second and metric values per second for the embedded sqlite store, an MLflow
server on sqlite and an MLflow server on PostgreSQL (basic auth on), with 1 and 4 jobs
logging at once. Each job does what a synque stage does per candidate set: a child run under
its parent, with its tags at creation, ~20 params and `--metrics` metrics in one batch, then
ends it.

    python bench/bench_tracking.py [--runs 40] [--metrics 20] [--jobs 1 4] [--stores ...]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STORES = ("sqlite", "server-sqlite", "server-postgres")


def job(
    uri: str,
    env: dict[str, str],
    experiment: str,
    n_runs: int,
    n_metrics: int,
    barrier: object = None,
    times: object = None,
) -> None:
    """One job: a parent run and `n_runs` children, each logged in batches as synque does.

    With a barrier, all jobs start logging together (imports and connections are not timed)
    and each puts its (start, end) clock times on `times`.
    """
    os.environ.update(env)
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(experiment)
    if barrier is not None:
        barrier.wait()  # type: ignore[attr-defined]
    start = time.time()
    parent = client.create_run(experiment_id, tags={"synque.role": "parent"})
    for i in range(n_runs):
        child = client.create_run(
            experiment_id,
            tags={
                mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID: parent.info.run_id,
                "synque.role": "child",
                "synque.dataset": f"set{i}",
                "synque.stage": "repr",
            },
        )
        now = int(time.time() * 1000)
        client.log_batch(
            child.info.run_id,
            metrics=[Metric(f"m{k}", float(k), now, 0) for k in range(n_metrics)],
            params=[Param(f"p{k}", str(k)) for k in range(20)],
            tags=[RunTag("synque.proxy", "m0,m1")],
        )
        client.set_terminated(child.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    if times is not None:
        times.put((start, time.time()))  # type: ignore[attr-defined]


def measure(uri: str, env: dict[str, str], jobs: int, n_runs: int, n_metrics: int) -> float:
    """Seconds from the first job's first write to the last job's last, `jobs` at once."""
    experiment = f"bench-{jobs}-{time.time_ns()}"
    job(uri, env, experiment, 1, 1)  # create the experiment (and schema) outside the timing
    ctx = mp.get_context("spawn")
    barrier, times = ctx.Barrier(jobs), ctx.Queue()
    procs = [
        ctx.Process(target=job, args=(uri, env, experiment, n_runs, n_metrics, barrier, times))
        for _ in range(jobs)
    ]
    for proc in procs:
        proc.start()
    spans = [times.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"a logging job failed against {uri} (exit {proc.exitcode})")
    return max(end for _, end in spans) - min(start for start, _ in spans)


@contextmanager
def store(kind: str, folder: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(tracking URI, client env) of a fresh store of `kind`, torn down afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'mlflow.db'}", {}
        return
    from tests.fakes.tracking_server import start_server

    backend = kind.split("-", 1)[1]
    with start_server(folder, backend=backend, auth=backend == "postgres") as server:
        yield server.uri, dict(server.env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="child runs per job")
    parser.add_argument("--metrics", type=int, default=20, help="metrics per child run")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    args = parser.parse_args()
    rows = []
    for kind in args.stores:
        with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
            os.chmod(tmp, 0o755)  # a postgres server running as its own user reads it
            with store(kind, Path(tmp)) as (uri, env):
                for jobs in args.jobs:
                    seconds = measure(uri, env, jobs, args.runs, args.metrics)
                    runs = jobs * args.runs
                    rows.append((kind, jobs, runs, seconds, runs / seconds))
                    print(f"  {kind}, {jobs} job(s): {runs} runs in {seconds:.1f} s", flush=True)
    load = os.getloadavg()[0]
    print(
        f"\n{args.runs} child runs per job, {args.metrics} metrics + 20 params each, one "
        f"batch per run (load avg {load:.1f}, {os.cpu_count()} CPUs)"
    )
    print(f"{'store':<16} {'jobs':>4} {'runs':>6} {'seconds':>8} {'runs/s':>8} {'metrics/s':>10}")
    for kind, jobs, runs, seconds, rate in rows:
        print(
            f"{kind:<16} {jobs:>4} {runs:>6} {seconds:>8.1f} {rate:>8.1f} "
            f"{rate * args.metrics:>10.0f}"
        )


if __name__ == "__main__":
    main()

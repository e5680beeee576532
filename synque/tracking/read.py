"""Reading runs back: the proxy values and task performance that correlate and select use.

MLflow hands back `Run` objects; this module turns them into polars tables, once, so that
`synque.analysis` works on plain tables and never imports MLflow.

Why two ways to read: `search_runs` builds an ORM object for every tag, metric, param and
dataset input of every run: about 1 ms of CPU per run (10 s for the 10,000 runs of
bench/bench_scale.py, a minute of wall time on a busy 2-core machine), against 0.15 ms here.  When
the tracking URI is a database (sqlite, PostgreSQL, MySQL), the runs' tags and latest metrics
are read instead with three SQL queries for all stages together, on MLflow's own table
definitions and engine (mlflow is pinned, so its schema is fixed; `test_read_scale.py` checks
both ways give the same table).  Against a tracking server the paged REST search is the only
way: one paged query per stage, 50,000 runs a page (MLflow's maximum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from synque import SynqueError
from synque.tracking.store import TAG, experiment_name

#: Columns of `proxy_values` (before the derived `proxy` column); seeds stay tag strings.
PROXY_SCHEMA = {
    "metric": pl.String,
    "variant": pl.String,
    "embedder": pl.String,
    "judge": pl.String,
    "higher_is_better": pl.Boolean,
    "stage": pl.String,
    "group": pl.String,
    "dataset": pl.String,
    "seed": pl.String,
    "value": pl.Float64,
    "run_id": pl.String,
    "start_time": pl.Int64,
}

#: Columns of `performance_values`.
PERFORMANCE_SCHEMA = {
    "source": pl.String,
    "group": pl.String,
    "dataset": pl.String,
    "seed": pl.String,
    "value": pl.Float64,
    "start_time": pl.Int64,
}


#: Runs per page of a search (MLflow's SEARCH_MAX_RESULTS_THRESHOLD: fewer round trips).
PAGE_SIZE = 50_000

#: Suffix of a proxy's noise estimate (`<proxy>.std`), logged next to the proxy, never one.
NOISE_SUFFIX = ".std"


@dataclass(frozen=True)
class RunRecord:
    """What the readers need of a run: its id, start time, tags and latest metrics."""

    run_id: str
    start_time: int
    tags: dict[str, str]
    metrics: dict[str, float]


def search_stage_runs(
    client: MlflowClient,
    task: str,
    stages: list[str],
    finished_only: bool = True,
    page_size: int | None = None,
) -> list[Run]:
    """All child runs of the given stages of a task, by MLflow's paged search (any store).

    `page_size` defaults to `PAGE_SIZE`, read at call time (tests page through small studies).
    """
    page_size = page_size or PAGE_SIZE
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
                [exp.experiment_id], filter_string=flt, max_results=page_size, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
    return runs


def _sql_store(client: MlflowClient) -> object | None:
    """The client's SqlAlchemyStore when its tracking URI is a database, else None."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def _sql_stage_records(
    store: object, experiment_id: str, stages: list[str], finished_only: bool
) -> list[RunRecord]:
    """Child runs of the stages read with three queries (runs, their tags, latest metrics)."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun, SqlTag

    runs, tags, latest = SqlRun.__table__, SqlTag.__table__, SqlLatestMetric.__table__
    role, stage = tags.alias("role"), tags.alias("stage")
    selected = (
        sa.select(runs.c.run_uuid, runs.c.start_time)
        .join(role, (role.c.run_uuid == runs.c.run_uuid) & (role.c.key == f"{TAG}role"))
        .join(stage, (stage.c.run_uuid == runs.c.run_uuid) & (stage.c.key == f"{TAG}stage"))
        .where(
            runs.c.experiment_id == int(experiment_id),
            runs.c.lifecycle_stage == "active",
            role.c.value == "child",
            stage.c.value.in_(stages),
        )
    )
    if finished_only:
        selected = selected.where(runs.c.status == RunStatus.to_string(RunStatus.FINISHED))
    ids = selected.with_only_columns(runs.c.run_uuid).scalar_subquery()
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        start = dict(conn.execute(selected).all())
        tag_rows = conn.execute(
            sa.select(tags.c.run_uuid, tags.c.key, tags.c.value).where(tags.c.run_uuid.in_(ids))
        ).all()
        metric_rows = conn.execute(
            sa.select(latest.c.run_uuid, latest.c.key, latest.c.value, latest.c.is_nan).where(
                latest.c.run_uuid.in_(ids)
            )
        ).all()
    run_tags: dict[str, dict[str, str]] = {run_id: {} for run_id in start}
    run_metrics: dict[str, dict[str, float]] = {run_id: {} for run_id in start}
    for run_id, key, value in tag_rows:
        run_tags[run_id][key] = value
    for run_id, key, value, is_nan in metric_rows:
        run_metrics[run_id][key] = math.nan if is_nan else float(value)
    return [
        RunRecord(run_id, int(start[run_id]), run_tags[run_id], run_metrics[run_id])
        for run_id in start
    ]


def stage_records(
    client: MlflowClient, task: str, stages: list[str], finished_only: bool = True
) -> list[RunRecord]:
    """Child runs of the stages, ordered as the search orders them (stage, newest first, id).

    Direct SQL on a database store, the paged search otherwise (see the module docstring);
    the order makes ties in start time resolve the same way on both.
    """
    store = _sql_store(client)
    if store is None:
        return [
            RunRecord(r.info.run_id, r.info.start_time, r.data.tags, r.data.metrics)
            for r in search_stage_runs(client, task, stages, finished_only)
        ]
    exp = client.get_experiment_by_name(experiment_name(task))
    if exp is None:
        return []
    records = _sql_stage_records(store, exp.experiment_id, stages, finished_only)
    order = {stage: i for i, stage in enumerate(stages)}
    return sorted(records, key=lambda r: (order[r.tags[f"{TAG}stage"]], -r.start_time, r.run_id))


def newest_per_key(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Keep the newest run per key: a forced re-run supersedes the older one."""
    return frame.sort("start_time", maintain_order=True).unique(
        subset=keys, keep="last", maintain_order=True
    )


def proxy_values(
    client: MlflowClient, task: str, stages: list[str], records: list[RunRecord] | None = None
) -> pl.DataFrame:
    """Long table of proxy values read back from MLflow (from `records`, the stages'
    `stage_records`, when the caller has read them already).

    Columns: proxy, metric, variant, embedder, judge, higher_is_better, stage, group, dataset,
    seed, value, run_id, start_time. `proxy` is the metric name, followed by `@variant` when
    one metric was logged with several variants, by `@embedder` when it was logged on several
    embedders (the digits study scores raw pixels and EfficientNet features alike) and by
    `@judge` when LENS was judged by several LLMs (`judge` is the lens run's `synque.llm`).
    A run says which of its metrics are proxies with its `synque.proxy` tag, so timing
    metrics and LLM statistics never become proxies; a listed `<proxy>.std` is the proxy's
    noise estimate, not a proxy, and is skipped too.
    """
    rows = []
    if records is None:
        records = stage_records(client, task, stages)
    for run in records:
        tags, metrics = run.tags, run.metrics
        for metric in filter(None, tags.get(f"{TAG}proxy", "").split(",")):
            if metric not in metrics or metric.endswith(NOISE_SUFFIX):
                continue
            rows.append(
                {
                    "metric": metric,
                    "variant": tags.get(f"{TAG}variant.{metric}", "default"),
                    "embedder": tags.get(f"{TAG}embedder", ""),
                    "judge": tags.get(f"{TAG}llm", "") if tags[f"{TAG}stage"] == "lens" else "",
                    "higher_is_better": tags.get(f"{TAG}higher_is_better.{metric}", "True")
                    == "True",
                    "stage": tags[f"{TAG}stage"],
                    "group": tags[f"{TAG}group"],
                    "dataset": tags[f"{TAG}dataset"],
                    "seed": tags[f"{TAG}seed"],
                    "value": float(metrics[metric]),
                    "run_id": run.run_id,
                    "start_time": run.start_time,
                }
            )
    frame = newest_per_key(
        pl.DataFrame(rows, schema=PROXY_SCHEMA),
        ["metric", "variant", "embedder", "judge", "group", "dataset", "seed"],
    )
    proxy = pl.col("metric")
    for column in ("variant", "embedder", "judge"):
        several = pl.col(column).n_unique().over("metric") > 1
        proxy = pl.when(several).then(pl.concat_str(proxy, pl.lit("@"), column)).otherwise(proxy)
    return frame.select(proxy.alias("proxy"), pl.all())


def logged_proxies(
    client: MlflowClient,
    task: str,
    stage_cfg: DictConfig,
    reader: str,
    records: list[RunRecord] | None = None,
) -> pl.DataFrame:
    """Proxy values a reader stage (correlate, select) works on: its stages, its seeds
    (`records`: the stages' runs, when the caller read them already)."""
    proxies = proxy_values(client, task, list(stage_cfg.proxy_stages), records)
    if proxies.is_empty():
        raise SynqueError(
            f"{reader}: no proxy runs logged for task {task} in {client.tracking_uri} "
            f"(run e.g. {task}_repr first)"
        )
    seeds = stage_cfg.get("seeds")
    if seeds:
        proxies = proxies.filter(pl.col("seed").is_in([str(s) for s in seeds]))
        if proxies.is_empty():
            raise SynqueError(f"{reader}: no proxy runs for seeds {list(seeds)}")
    return proxies


def performance_values(client: MlflowClient, task: str) -> pl.DataFrame:
    """Task performance of each candidate set: columns source, group, dataset, seed, value."""
    rows = []
    for run in stage_records(client, task, ["train"]):
        tags = run.tags
        if "task_performance" not in run.metrics:
            continue
        rows.append(
            {
                "source": tags.get(f"{TAG}performance_source", "trained"),
                "group": tags[f"{TAG}group"],
                "dataset": tags[f"{TAG}dataset"],
                "seed": tags[f"{TAG}seed"],
                "value": float(run.metrics["task_performance"]),
                "start_time": run.start_time,
            }
        )
    frame = pl.DataFrame(rows, schema=PERFORMANCE_SCHEMA)
    return newest_per_key(frame, ["source", "group", "dataset", "seed"])

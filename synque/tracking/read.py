"""Reading runs back: the proxy values and task performance that correlate and select use.

MLflow hands back `Run` objects; this module turns them into polars tables, once, so that
`synque.analysis` works on plain tables and never imports MLflow.
"""

from __future__ import annotations

import polars as pl
from mlflow.entities import Run
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


def newest_per_key(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Keep the newest run per key: a forced re-run supersedes the older one."""
    return frame.sort("start_time", maintain_order=True).unique(
        subset=keys, keep="last", maintain_order=True
    )


def proxy_values(client: MlflowClient, task: str, stages: list[str]) -> pl.DataFrame:
    """Long table of proxy values read back from MLflow.

    Columns: proxy, metric, variant, embedder, judge, higher_is_better, stage, group, dataset,
    seed, value, run_id, start_time. `proxy` is the metric name, followed by `@variant` when
    one metric was logged with several variants, by `@embedder` when it was logged on several
    embedders (the digits study scores raw pixels and EfficientNet features alike) and by
    `@judge` when LENS was judged by several LLMs (`judge` is the lens run's `synque.llm`).
    A run says which of its metrics are proxies with its `synque.proxy` tag, so timing
    metrics and LLM statistics never become proxies.
    """
    rows = []
    for run in search_stage_runs(client, task, stages):
        tags, metrics = run.data.tags, run.data.metrics
        for metric in filter(None, tags.get(f"{TAG}proxy", "").split(",")):
            if metric not in metrics:
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
                    "run_id": run.info.run_id,
                    "start_time": run.info.start_time,
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
    client: MlflowClient, task: str, stage_cfg: DictConfig, reader: str
) -> pl.DataFrame:
    """Proxy values a reader stage (correlate, select) works on: its stages, its seeds."""
    proxies = proxy_values(client, task, list(stage_cfg.proxy_stages))
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
                "value": float(run.data.metrics["task_performance"]),
                "start_time": run.info.start_time,
            }
        )
    frame = pl.DataFrame(rows, schema=PERFORMANCE_SCHEMA)
    return newest_per_key(frame, ["source", "group", "dataset", "seed"])

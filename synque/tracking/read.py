"""Reading runs back: the proxy values and task performance that correlate and select use."""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from synque import SynqueError
from synque.tracking.store import TAG, experiment_name


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

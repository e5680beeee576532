"""The `correlate` stage: how well does each proxy predict real task performance?

Reads proxy and performance runs back from MLflow (`synque.tracking.read`), computes the
tables with `synque.analysis` and logs them: `correlations.csv`, `summary.csv`, metrics
`<coef>.<proxy>` and plots. A plot that cannot be drawn leaves the tag
`synque.warning.plots` instead of failing the run: the tables are the result.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import mlflow
import polars as pl
from omegaconf import DictConfig

from synque.analysis import (
    COEFFICIENTS,
    correlation_plots,
    join_performance,
    print_summary,
    select_performance,
    source_agreement,
    summarize,
)
from synque.stages.common import load_task
from synque.tracking import TAG, StageRun, log_table
from synque.tracking.read import logged_proxies, performance_values

log = logging.getLogger(__name__)


def metric_key(proxy: str) -> str:
    """MLflow metric names cannot hold '@': `pad@xgboost` -> `pad.xgboost`."""
    return proxy.replace("@", ".")


def headline_metrics(summary: pl.DataFrame) -> dict[str, float]:
    """`spearman.<proxy>` etc. for every defined headline coefficient."""
    metrics = {}
    for row in summary.iter_rows(named=True):
        for coef in COEFFICIENTS:
            value = row[coef]
            if value is not None and not math.isnan(value):
                metrics[f"{coef}.{metric_key(row['proxy'])}"] = value
    return metrics


def log_plots(merged: pl.DataFrame, summary: pl.DataFrame) -> None:
    """Draw and log the plots; on any failure tag the run with the reason and go on."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for path in correlation_plots(merged, summary, Path(tmp)):
                mlflow.log_artifact(str(path), "plots")
    except Exception as exc:  # a figure must never cost the run its tables
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]
        log.warning("correlate: plots skipped (%s)", reason)
        mlflow.set_tag(f"{TAG}warning.plots", reason)


def run_correlate(cfg: DictConfig) -> pl.DataFrame:
    """Read proxies and performance back from MLflow, correlate, log and print."""
    scfg = cfg.stage
    task = load_task(cfg)
    job = StageRun(cfg, "correlate", task.name)
    proxies = logged_proxies(job.client, task.name, scfg, "correlate")
    perf_all = performance_values(job.client, task.name)
    perf, source = select_performance(perf_all, str(scfg.performance))
    top_ks = [int(k) for k in scfg.top_k]
    detail, summary = summarize(
        proxies, perf, top_ks, int(scfg.bootstrap), float(scfg.confidence), seed=int(cfg.seed)
    )
    merged = join_performance(proxies, perf)
    agreement = source_agreement(perf_all)
    with job:
        mlflow.set_tag(f"{TAG}performance_source", source)
        mlflow.log_params(
            {
                "input_runs": merged["run_id"].n_unique(),
                "proxies_found": ",".join(summary["proxy"]),
            }
        )
        log_table(detail, "correlations.csv")
        log_table(summary, "summary.csv")
        metrics = headline_metrics(summary)
        if agreement is not None:
            metrics["spearman.trained_vs_recorded"] = agreement
        mlflow.log_metrics(metrics)
        if scfg.plots:
            log_plots(merged, summary)
        run_id = mlflow.active_run().info.run_id
    print_summary(
        summary, f"synque-{task.name}: proxy vs. {source} performance ({run_id[:8]})", top_ks
    )
    if agreement is not None:
        print(f"Spearman between trained and recorded performance: {agreement:.3f}")
    return summary

"""The `correlate` stage: how well does each proxy predict real task performance?

Reads proxy and performance runs back from MLflow (`synque.tracking.read`), computes the
tables with `synque.analysis` and logs them: `correlations.csv`, `summary.csv` (and the same
tables as MLflow tables, `correlations.json`, `summary.json`), metrics `<coef>.<proxy>`,
figures under `plots/`, and the headline table as Markdown in the run's and the experiment's
description. The selection rules of `stage.rules` are scored like proxies (`rule:<name>`:
coefficients, top-k and regret) into `rules.csv` / `rules.json` and metrics
`<coef>.rule.<name>`, shown beside the proxies; `summary.csv` stays the proxies' own table.
A plot or a note that cannot be made leaves the tag `synque.warning.plots` or
`synque.warning.note` instead of failing the run: the tables are the result.

The run aggregates every seed: it has no seed of its own (`synque.seed=all`, the seeds read
in `synque.seeds`); the bootstrap draws from `stage.bootstrap_seed`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import mlflow
import polars as pl
from omegaconf import DictConfig, OmegaConf

from synque.analysis import (
    COEFFICIENTS,
    join_performance,
    print_summary,
    select_performance,
    source_agreement,
    summarize,
)
from synque.analysis.plots import DPI, correlation_figures
from synque.analysis.report import seed_list, summary_markdown
from synque.analysis.rules import all_rule_values, build_rules, stage_rule_nodes
from synque.stages.common import load_task
from synque.tracking import TAG, StageRun, log_table
from synque.tracking.inputs import log_mlflow_table
from synque.tracking.notes import error_line, write_notes
from synque.tracking.read import logged_proxies, performance_values

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: Bootstrap seed when `stage.bootstrap_seed` is not set: the top-level `seed`'s default,
#: which earlier runs drew from, so their intervals are reproduced.
BOOTSTRAP_SEED = 42


def metric_key(proxy: str) -> str:
    """MLflow metric names cannot hold '@' or ':': `pad@xgboost` -> `pad.xgboost`,
    `rule:mean_rank` -> `rule.mean_rank`."""
    return proxy.replace("@", ".").replace(":", ".")


def headline_metrics(summary: pl.DataFrame) -> dict[str, float]:
    """`spearman.<proxy>` etc. for every defined headline coefficient."""
    metrics = {}
    for row in summary.iter_rows(named=True):
        for coef in COEFFICIENTS:
            value = row[coef]
            if value is not None and not math.isnan(value):
                metrics[f"{coef}.{metric_key(row['proxy'])}"] = value
    return metrics


def correlation_plots(merged: pl.DataFrame, summary: pl.DataFrame) -> list[tuple[str, Figure]]:
    """Every figure of the run, by file name, drawn before any is logged (so a plot that
    fails leaves no partial set of plots)."""
    return list(correlation_figures(merged, summary))


def log_plots(merged: pl.DataFrame, summary: pl.DataFrame) -> None:
    """Draw the figures and log them (`mlflow.log_figure`, under `plots/`); on any failure
    tag the run with the reason and go on."""
    try:
        for name, figure in correlation_plots(merged, summary):
            mlflow.log_figure(figure, f"plots/{name}", save_kwargs={"dpi": DPI})
    except Exception as exc:  # a figure must never cost the run its tables
        reason = error_line(exc)
        log.warning("correlate: plots skipped (%s)", reason)
        mlflow.set_tag(f"{TAG}warning.plots", reason)


def run_correlate(cfg: DictConfig) -> pl.DataFrame:
    """Read proxies and performance back from MLflow, correlate, log and print."""
    scfg = cfg.stage
    task = load_task(cfg)
    job = StageRun(cfg, "correlate", task.name, aggregate=True)
    proxies = logged_proxies(job.client, task.name, scfg, "correlate")
    perf_all = performance_values(job.client, task.name)
    perf, source = select_performance(perf_all, str(scfg.performance))
    top_ks = [int(k) for k in scfg.top_k]
    bootstrap_seed = OmegaConf.select(scfg, "bootstrap_seed", default=BOOTSTRAP_SEED)
    detail, summary = summarize(
        proxies, perf, top_ks, int(scfg.bootstrap), float(scfg.confidence), seed=int(bootstrap_seed)
    )
    merged = join_performance(proxies, perf)
    rules_used = build_rules(stage_rule_nodes(scfg))
    rule_rows, skipped = all_rule_values(proxies, rules_used, task.name)
    rules = pl.DataFrame()
    if not rule_rows.is_empty():
        _, rules = summarize(
            rule_rows,
            perf,
            top_ks,
            int(scfg.bootstrap),
            float(scfg.confidence),
            seed=int(bootstrap_seed),
        )
    for name, reason in skipped.items():
        log.warning("correlate: rule %s skipped (%s)", name, reason)
    shown = pl.concat([summary, rules], how="diagonal_relaxed") if rules.height else summary
    agreement = source_agreement(perf_all)
    note = summary_markdown(
        shown,
        task=task.name,
        source=source,
        seeds=merged["seed"],
        n_sets=merged.select("group", "dataset").unique().height,
        n_groups=merged["group"].n_unique(),
        top_ks=top_ks,
        confidence=float(scfg.confidence),
    )
    with job:
        mlflow.set_tags(
            {f"{TAG}performance_source": source, f"{TAG}seeds": seed_list(merged["seed"])}
        )
        mlflow.log_params(
            {
                "input_runs": merged["run_id"].n_unique(),
                "proxies_found": ",".join(summary["proxy"]),
            }
        )
        log_table(detail, "correlations.csv")
        log_table(summary, "summary.csv")
        log_mlflow_table(detail, "correlations.json")
        log_mlflow_table(summary, "summary.json")
        if rules.height:
            log_table(rules, "rules.csv")
            log_mlflow_table(rules, "rules.json")
        mlflow.set_tags({f"{TAG}warning.rule.{n}": r[:500] for n, r in skipped.items()})
        metrics = headline_metrics(shown)
        if agreement is not None:
            metrics["spearman.trained_vs_recorded"] = agreement
        mlflow.log_metrics(metrics)
        if scfg.plots:
            log_plots(merged, summary)
        write_notes(job.client, job.experiment_id, "correlate", note)
        run_id = mlflow.active_run().info.run_id
    print_summary(shown, f"synque-{task.name}: proxy vs. {source} performance", top_ks, run_id)
    if agreement is not None:
        print(f"Spearman between trained and recorded performance: {agreement:.3f}")
    return summary

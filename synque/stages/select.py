"""The `select` stage: which candidate set should I train on? No performance labels needed.

Reads proxy runs back from MLflow, ranks candidate sets with `synque.analysis.selection`
(per proxy, oriented by `higher_is_better`, and combined by mean rank), logs `ranking.csv`
(and the MLflow table `ranking.json`), the pick per group as `synque.best.<group>` and the
recommendation as Markdown in the run's and the experiment's description, and prints the
ranking. Like `correlate`, the run aggregates every seed (`synque.seed=all`, `synque.seeds`).
"""

from __future__ import annotations

import mlflow
import polars as pl
from omegaconf import DictConfig

from synque.analysis import best_per_group, print_ranking, rank_candidates
from synque.analysis.report import ranking_markdown, seed_list
from synque.stages.common import load_task
from synque.tracking import TAG, StageRun, log_table
from synque.tracking.inputs import log_mlflow_table
from synque.tracking.notes import write_notes
from synque.tracking.read import logged_proxies


def run_select(cfg: DictConfig) -> pl.DataFrame:
    """Rank the task's candidate sets by the logged proxies, log and print the ranking."""
    scfg = cfg.stage
    task = load_task(cfg)
    job = StageRun(cfg, "select", task.name, aggregate=True)
    proxies = logged_proxies(job.client, task.name, scfg, "select")
    chosen = list(scfg.proxies) if scfg.proxies else None
    ranking = rank_candidates(proxies, chosen)
    seeds = (proxies.filter(pl.col("proxy").is_in(chosen)) if chosen else proxies)["seed"]
    note = ranking_markdown(ranking, task=task.name, seeds=seeds)
    with job:
        mlflow.set_tag(f"{TAG}seeds", seed_list(seeds))
        log_table(ranking, "ranking.csv")
        log_mlflow_table(ranking, "ranking.json")
        mlflow.set_tags({f"{TAG}best.{g}": d for g, d in best_per_group(ranking).items()})
        write_notes(job.client, job.experiment_id, "select", note)
    print_ranking(ranking, task.name, int(scfg.top))
    return ranking

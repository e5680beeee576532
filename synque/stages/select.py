"""The `select` stage: which candidate set should I train on? No performance labels needed.

Reads proxy runs back from MLflow, ranks candidate sets with `synque.analysis.selection`
(per proxy, oriented by `higher_is_better`, and combined by mean rank), logs `ranking.csv`
and the pick per group as `synque.best.<group>`, and prints the ranking.
"""

from __future__ import annotations

import mlflow
import polars as pl
from omegaconf import DictConfig

from synque.analysis import best_per_group, print_ranking, rank_candidates
from synque.stages.common import load_task
from synque.tracking import TAG, StageRun, log_table
from synque.tracking.read import logged_proxies


def run_select(cfg: DictConfig) -> pl.DataFrame:
    """Rank the task's candidate sets by the logged proxies, log and print the ranking."""
    scfg = cfg.stage
    task = load_task(cfg)
    job = StageRun(cfg, "select", task.name)
    proxies = logged_proxies(job.client, task.name, scfg, "select")
    chosen = list(scfg.proxies) if scfg.proxies else None
    ranking = rank_candidates(proxies, chosen)
    with job:
        log_table(ranking, "ranking.csv")
        mlflow.set_tags({f"{TAG}best.{g}": d for g, d in best_per_group(ranking).items()})
    print_ranking(ranking, task.name, int(scfg.top))
    return ranking

"""The `select` stage: which candidate set should I train on? No performance labels needed.

Each proxy ranks the candidate sets of a group per seed (oriented by `higher_is_better`);
a set's rank for a proxy is its mean rank over seeds, and the combined rank is the mean of
those over the chosen proxies. Ties share the average rank.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from omegaconf import DictConfig

from synque import SynqueError
from synque.stages.common import load_task
from synque.tracking import StageRun, log_table
from synque.tracking.read import logged_proxies


def rank_candidates(proxies: pd.DataFrame, chosen: list[str] | None = None) -> pd.DataFrame:
    """One row per (group, dataset): mean value and mean rank per proxy, combined rank."""
    if chosen:
        unknown = sorted(set(chosen) - set(proxies.proxy))
        if unknown:
            raise SynqueError(f"select: no logged values for proxies {unknown}")
        proxies = proxies[proxies.proxy.isin(chosen)]
    frame = proxies.copy()
    # rank 1 = best; orientation per proxy
    frame["oriented"] = [
        v if hib else -v for v, hib in zip(frame.value, frame.higher_is_better, strict=True)
    ]
    frame["rank"] = frame.groupby(["proxy", "group", "seed"])["oriented"].rank(
        ascending=False, method="average"
    )
    values = frame.pivot_table(
        index=["group", "dataset"], columns="proxy", values="value", aggfunc="mean"
    )
    ranks = frame.pivot_table(
        index=["group", "dataset"], columns="proxy", values="rank", aggfunc="mean"
    )
    table = pd.concat([ranks.add_prefix("rank."), values], axis=1)
    table["rank.combined"] = ranks.mean(axis=1)
    table = table.reset_index()
    table["position"] = table.groupby("group")["rank.combined"].rank(method="min").astype(int)
    ordered = [
        "group",
        "position",
        "dataset",
        "rank.combined",
        *sorted(c for c in table if c.startswith("rank.") and c != "rank.combined"),
    ]
    ordered += [c for c in table.columns if c not in ordered]
    return table[ordered].sort_values(["group", "position", "dataset"]).reset_index(drop=True)


def print_ranking(ranking: pd.DataFrame, task: str, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    proxies = [c[5:] for c in ranking.columns if c.startswith("rank.") and c != "rank.combined"]
    for group, part in ranking.groupby("group", sort=True):
        title = f"synque-{task}: candidate sets ranked (mean rank per proxy; 1 = best)" + (
            "" if group == "all" else f" ({group})"
        )
        table = Table(title=title)
        table.add_column("#", justify="right")
        table.add_column("dataset")
        table.add_column("combined rank", justify="right")
        for proxy in proxies:
            table.add_column(proxy, justify="right")
        for _, row in part.head(top).iterrows():
            cells = [f"{row['rank.' + p]:g}" for p in proxies]  # values are in ranking.csv
            table.add_row(
                str(row.position), str(row.dataset), f"{row['rank.combined']:.2f}", *cells
            )
        console.print(table)
        best = part.iloc[0]
        where = "" if group == "all" else f" for {group}"
        console.print(f"Recommendation{where}: [bold]{best.dataset}[/bold]")


def run_select(cfg: DictConfig) -> pd.DataFrame:
    scfg = cfg.stage
    task = load_task(cfg)
    job = StageRun(cfg, "select", task.name)
    proxies = logged_proxies(job.client, task.name, scfg, "select")
    chosen = list(scfg.proxies) if scfg.proxies else None
    ranking = rank_candidates(proxies, chosen)
    with job:
        log_table(ranking, "ranking.csv")
        best = ranking[ranking.position == 1].drop_duplicates("group")
        mlflow.set_tags(
            {f"synque.best.{g}": d for g, d in zip(best.group, best.dataset, strict=True)}
        )
    print_ranking(ranking, task.name, int(scfg.top))
    return ranking

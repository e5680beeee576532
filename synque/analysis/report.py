"""The tables correlate and select print for the user (rich), from their polars results."""

from __future__ import annotations

import polars as pl

from synque.analysis.plots import fmt

WIDTH = 160


def print_summary(summary: pl.DataFrame, title: str, top_ks: list[int]) -> None:
    """Headline coefficients, the Spearman CI and top-k vs. oracle, one row per proxy."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("proxy", "spearman", "kendall", "pearson"):
        table.add_column(col, justify="left" if col == "proxy" else "right")
    table.add_column("spearman CI", justify="right")
    for k in top_ks:
        table.add_column(f"top-{k} / oracle", justify="right")
    table.add_column("mean all", justify="right")
    for row in summary.iter_rows(named=True):
        lo, hi = row.get("spearman_lo"), row.get("spearman_hi")
        ci = "-" if lo is None or hi is None else f"[{lo:.2f}, {hi:.2f}]"
        tops = [f"{fmt(row[f'top{k}'])} / {fmt(row[f'top{k}_oracle'])}" for k in top_ks]
        table.add_row(
            str(row["proxy"]),
            fmt(row["spearman"]),
            fmt(row["kendall"]),
            fmt(row["pearson"]),
            ci,
            *tops,
            fmt(row["mean_all"]),
        )
    Console(width=WIDTH).print(table)


def print_ranking(ranking: pl.DataFrame, task: str, top: int) -> None:
    """Per group: the `top` best candidate sets with their mean rank per proxy, then the pick."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=WIDTH)
    proxies = [c[5:] for c in ranking.columns if c.startswith("rank.") and c != "rank.combined"]
    for (group,), part in ranking.group_by("group", maintain_order=True):
        title = f"synque-{task}: candidate sets ranked (mean rank per proxy; 1 = best)" + (
            "" if group == "all" else f" ({group})"
        )
        table = Table(title=title)
        table.add_column("#", justify="right")
        table.add_column("dataset")
        table.add_column("combined rank", justify="right")
        for proxy in proxies:
            table.add_column(proxy, justify="right")
        for row in part.head(top).iter_rows(named=True):
            cells = [fmt(row[f"rank.{p}"], "g") for p in proxies]  # values are in ranking.csv
            table.add_row(
                fmt(row["position"], "d"),
                str(row["dataset"]),
                fmt(row["rank.combined"], ".2f"),
                *cells,
            )
        console.print(table)
        where = "" if group == "all" else f" for {group}"
        console.print(f"Recommendation{where}: [bold]{part['dataset'][0]}[/bold]")

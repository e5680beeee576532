"""The tables correlate and select show the user, from their polars results: printed (rich)
and as short Markdown for MLflow's run and experiment descriptions (`mlflow.note.content`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import polars as pl

from synque.analysis.plots import fmt
from synque.analysis.rules import RULE_PREFIX

WIDTH = 160
#: Characters of one Markdown note at most: MLflow keeps 8000 per run tag and 20000 per
#: experiment tag, which holds both the correlate and the select section (and user text).
NOTE_BUDGET = 7000


def print_summary(
    summary: pl.DataFrame, title: str, top_ks: list[int], run_id: str | None = None
) -> None:
    """Headline coefficients, the Spearman CI, top-k vs. oracle and the top-k regret, one row
    per proxy; selection rules (`rule:<name>` rows) follow the proxies under a rule line."""
    from rich.console import Console
    from rich.table import Table

    caption = f"run {run_id[:8]}" if run_id else None
    table = Table(title=title, caption=caption)
    for col in ("proxy", "spearman", "kendall", "pearson"):
        table.add_column(col, justify="left" if col == "proxy" else "right")
    table.add_column("spearman CI", justify="right")
    for k in top_ks:
        table.add_column(f"top-{k} / oracle", justify="right")
    table.add_column("mean all", justify="right")
    regrets = [k for k in top_ks if f"regret{k}" in summary.columns]
    for k in regrets:
        table.add_column(f"regret-{k}", justify="right")
    is_rule = summary["proxy"].str.starts_with(RULE_PREFIX)
    ordered = pl.concat([summary.filter(~is_rule), summary.filter(is_rule)])
    n_proxies = int((~is_rule).sum())
    for i, row in enumerate(ordered.iter_rows(named=True)):
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
            *(fmt(row.get(f"regret{k}")) for k in regrets),
            end_section=i == n_proxies - 1 and n_proxies < ordered.height,
        )
    Console(width=WIDTH).print(table)


def print_ranking(ranking: pl.DataFrame, task: str, top: int, rule: str = "mean rank") -> None:
    """Per group: the `top` best candidate sets with their mean rank per proxy, then the pick.

    Every rank is shown with two decimals (a mean over seeds is rarely whole), and the title
    stays short so it never wraps on an 80-column terminal; the detail is in the caption.
    """
    from rich.console import Console
    from rich.table import Table

    # a terminal gets its own width (rich folds long set names inside their cell instead of
    # the terminal breaking every line); logs and pipes get the wide layout
    console = Console(width=None if sys.stdout.isatty() else WIDTH)
    proxies = [c[5:] for c in ranking.columns if c.startswith("rank.") and c != "rank.combined"]
    caption = f"rank per proxy: mean over seeds, 1 = best; combined: {rule}"
    for (group,), part in ranking.group_by("group", maintain_order=True):
        title = f"synque-{task}: ranked sets" + ("" if group == "all" else f" ({group})")
        table = Table(title=title, caption=caption)
        table.add_column("#", justify="right")
        table.add_column("dataset", overflow="fold")  # a set's name is never cut
        table.add_column("combined", justify="right")
        for proxy in proxies:
            table.add_column(proxy, justify="right")
        for row in part.head(top).iter_rows(named=True):
            cells = [fmt(row[f"rank.{p}"], ".2f") for p in proxies]  # values: ranking.csv
            table.add_row(
                fmt(row["position"], "d"),
                str(row["dataset"]),
                fmt(row["rank.combined"], ".2f"),
                *cells,
            )
        console.print(table)
        where = "" if group == "all" else f" for {group}"
        console.print(f"Recommendation{where}: [bold]{part['dataset'][0]}[/bold]")


# --- Markdown notes ---------------------------------------------------------------------------


def seed_list(seeds: Iterable[str]) -> str:
    """'42, 43, 44' in numeric order (seeds are tag strings)."""
    unique = set(seeds)
    return ", ".join(sorted(unique, key=lambda s: (not s.lstrip("-").isdigit(), len(s), s)))


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
    ]


def _fit(head: list[str], table: list[str], foot: list[str], what: str) -> str:
    """Head, table, foot as one note within `NOTE_BUDGET`: rows are dropped from the end
    (and counted) rather than letting MLflow refuse or cut the tag."""
    header, rows = table[:2], table[2:]
    kept = len(rows)
    while True:
        more = [f"... {len(rows) - kept} more rows in {what}"] if kept < len(rows) else []
        text = "\n".join([*head, "", *header, *rows[:kept], *more, "", *foot]).strip()
        if len(text) <= NOTE_BUDGET or kept == 0:
            return text[:NOTE_BUDGET]
        kept -= 1


def _with_ci(row: dict, coef: str) -> str:
    lo, hi = row.get(f"{coef}_lo"), row.get(f"{coef}_hi")
    point = fmt(row[coef])
    if lo is None or hi is None or point == "-":
        return point
    return f"{point} [{lo:.2f}, {hi:.2f}]"


def summary_markdown(
    summary: pl.DataFrame,
    *,
    task: str,
    source: str,
    seeds: Iterable[str],
    n_sets: int,
    n_groups: int,
    top_ks: list[int],
    confidence: float | None = None,
) -> str:
    """The correlate headline as Markdown: a title line (task, performance source, seeds
    aggregated, candidate sets), then one row per proxy (coefficients with their bootstrap
    interval, top-k / oracle top-k, mean of all sets), then one line saying how to read it."""
    seeds = list(seeds)
    groups = f" in {n_groups} groups" if n_groups > 1 else ""
    head = [
        f"### {task}: proxy vs. {source} task performance · seeds {seed_list(seeds)} "
        f"aggregated · {n_sets} candidate sets{groups}"
    ]
    header = ["proxy", "Spearman", "Kendall", "Pearson"]
    header += [f"top-{k} / oracle" for k in top_ks] + ["mean all"]
    rows = []
    for row in summary.iter_rows(named=True):
        tops = [f"{fmt(row.get(f'top{k}'))} / {fmt(row.get(f'top{k}_oracle'))}" for k in top_ks]
        name = str(row["proxy"]) + ("" if row.get("higher_is_better", True) else " ↓")
        rows.append(
            [f"**{name}**", *(_with_ci(row, c) for c in ("spearman", "kendall", "pearson"))]
            + [*tops, fmt(row.get("mean_all"))]
        )
    has_ci = any(c.endswith("_lo") for c in summary.columns)
    ci = f" [{confidence:.0%} bootstrap CI]" if has_ci and confidence is not None else ""
    foot = [
        f"Coefficients{ci}: mean over seeds, then over groups. Top-k: mean performance of the "
        "k sets the proxy ranks best, vs. the best k (oracle) and all sets."
    ]
    if not summary["higher_is_better"].all():
        foot.append("↓ lower is better: a good proxy correlates negatively.")
    table = _table(header, [":--", *["--:"] * (len(header) - 1)], rows)
    return _fit(head, table, foot, "summary.csv")


def _firsts(part: pl.DataFrame, column: str) -> str:
    """The set(s) ranked first by `column` within one group's rows (ties shown, at most 2)."""
    ranked = part.drop_nulls(column)
    if ranked.is_empty():
        return "-"
    best = ranked.filter(pl.col(column) == ranked[column].min())["dataset"].sort().to_list()
    names = " = ".join(f"`{name}`" for name in best[:2])
    return names + (f" (+{len(best) - 2} tied)" if len(best) > 2 else "")


def ranking_markdown(
    ranking: pl.DataFrame, *, task: str, seeds: Iterable[str], rule: str = "mean rank"
) -> str:
    """The select recommendation as Markdown: a title line, then per group the set ranked
    first by the combined rank (combined by `rule`) and by each proxy alone."""
    proxies = [c[5:] for c in ranking.columns if c.startswith("rank.") and c != "rank.combined"]
    parts = ranking.group_by("group", maintain_order=True)
    n_groups = ranking["group"].n_unique()
    n_sets = ranking.select("group", "dataset").unique().height
    groups = f" in {n_groups} groups" if n_groups > 1 else ""
    head = [
        f"### {task}: which candidate set to train on · seeds {seed_list(seeds)} "
        f"aggregated · {n_sets} candidate sets{groups}"
    ]
    header = (["group"] if n_groups > 1 else []) + ["**recommended** (combined)", *proxies]
    rows = []
    for (group,), part in parts:
        cells = [f"**{_firsts(part, 'rank.combined')}**"]
        cells += [_firsts(part, f"rank.{p}") for p in proxies]
        rows.append(([str(group)] if n_groups > 1 else []) + cells)
    foot = [
        "Each proxy ranks the sets per seed (its own direction), ranks are averaged over "
        f"seeds; combined: {rule}. No performance labels of this task used."
    ]
    return _fit(head, _table(header, [":--"] * len(header), rows), foot, "ranking.csv")

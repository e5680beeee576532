"""Which candidate set should I train on? (the maths of `select`; no performance needed)

Each proxy ranks the candidate sets of a group per seed, oriented by its `higher_is_better`
(rank 1 = best, ties share the average rank); a set's rank for a proxy is its mean rank over
seeds, and the combined rank is the mean of those over the chosen proxies. Ranks rather than
raw values are combined because proxies live on unrelated scales.
"""

from __future__ import annotations

import polars as pl

from synque import SynqueError

KEYS = ["group", "dataset"]


def rank_candidates(proxies: pl.DataFrame, chosen: list[str] | None = None) -> pl.DataFrame:
    """One row per (group, dataset), best first within each group.

    Columns: group, position (1 = recommended; ties share the lowest), dataset,
    rank.combined, `rank.<proxy>` per proxy (mean rank over seeds), then `<proxy>` per proxy
    (mean raw value over seeds, for reference).
    """
    if chosen:
        unknown = sorted(set(chosen) - set(proxies["proxy"]))
        if unknown:
            raise SynqueError(f"select: no logged values for proxies {unknown}")
        proxies = proxies.filter(pl.col("proxy").is_in(chosen))
    value = pl.col("value").fill_nan(None)
    oriented = pl.when(pl.col("higher_is_better")).then(value).otherwise(-value)
    frame = proxies.with_columns(
        value.alias("value"),
        oriented.rank("average", descending=True).over("proxy", "group", "seed").alias("rank"),
    )
    names = sorted(frame["proxy"].unique().to_list())
    ranks = _per_proxy_means(frame, "rank", names).rename({n: f"rank.{n}" for n in names})
    values = _per_proxy_means(frame, "value", names)
    rank_columns = [f"rank.{n}" for n in names]
    table = ranks.join(values, on=KEYS, how="inner").with_columns(
        pl.mean_horizontal(rank_columns).alias("rank.combined")
    )
    position = pl.col("rank.combined").rank("min").over("group").cast(pl.Int64)
    return table.select(
        "group", position.alias("position"), "dataset", "rank.combined", *rank_columns, *names
    ).sort("group", "position", "dataset", nulls_last=True)


def _per_proxy_means(frame: pl.DataFrame, column: str, names: list[str]) -> pl.DataFrame:
    """Wide table: one row per (group, dataset), one column per proxy (mean over seeds)."""
    wide = frame.pivot(on="proxy", index=KEYS, values=column, aggregate_function="mean")
    return wide.select(*KEYS, *names)


def best_per_group(ranking: pl.DataFrame) -> dict[str, str]:
    """The recommended candidate set of each group (the first at position 1)."""
    best = ranking.filter(pl.col("position") == 1).unique(
        "group", keep="first", maintain_order=True
    )
    return dict(zip(best["group"], best["dataset"], strict=True))

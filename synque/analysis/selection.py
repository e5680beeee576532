"""Which candidate set should I train on? (the maths of `select`; no performance needed)

Each proxy ranks the candidate sets of a group per seed, oriented by its `higher_is_better`
(rank 1 = best, ties share the average rank); a set's rank for a proxy is its mean rank over
seeds. Ranks rather than raw values are combined because proxies live on unrelated scales.
How the per-proxy ranks become one combined rank is a selection rule
(`synque.analysis.rules`); `rank_candidates` is the historical mean-rank rule.
"""

from __future__ import annotations

import polars as pl

from synque import SynqueError

KEYS = ["group", "dataset"]


def oriented_ranks(proxies: pl.DataFrame) -> pl.DataFrame:
    """`proxies` with `value` (NaN as null) and `rank` per (proxy, group, seed), 1 = best.

    A failed proxy (NaN) gets no rank, so it never counts as best or worst.
    """
    value = pl.col("value").fill_nan(None)
    oriented = pl.when(pl.col("higher_is_better")).then(value).otherwise(-value)
    return proxies.with_columns(
        value.alias("value"),
        oriented.rank("average", descending=True).over("proxy", "group", "seed").alias("rank"),
    )


def proxy_ranks(proxies: pl.DataFrame, chosen: list[str] | None = None) -> pl.DataFrame:
    """One row per (group, dataset): `rank.<proxy>` (mean rank over seeds) then `<proxy>`
    (mean raw value over seeds), proxies in name order; `chosen` keeps only those proxies."""
    if chosen:
        unknown = sorted(set(chosen) - set(proxies["proxy"]))
        if unknown:
            raise SynqueError(f"select: no logged values for proxies {unknown}")
        proxies = proxies.filter(pl.col("proxy").is_in(chosen))
    frame = oriented_ranks(proxies)
    names = sorted(frame["proxy"].unique().to_list())
    # means first, then one pivot of the (much smaller) table: select's confidence ranks
    # millions of stacked resampled values through here
    means = frame.group_by([*KEYS, "proxy"]).agg(pl.col("rank").mean(), pl.col("value").mean())
    wide = means.pivot(on="proxy", index=KEYS, values=["rank", "value"], separator="\x1f")
    return wide.select(
        *KEYS,
        *(pl.col(f"rank\x1f{n}").alias(f"rank.{n}") for n in names),
        *(pl.col(f"value\x1f{n}").alias(n) for n in names),
    ).sort(KEYS)


def finish_ranking(table: pl.DataFrame, combined: pl.Series | pl.Expr) -> pl.DataFrame:
    """The ranking's fixed column order with `rank.combined` and `position` filled in.

    Columns: group, position (1 = recommended; ties share the lowest), dataset,
    rank.combined, `rank.<proxy>` per proxy, then `<proxy>` per proxy; best first per group.
    """
    rank_columns = [c for c in table.columns if c.startswith("rank.")]
    names = [c[5:] for c in rank_columns]
    table = table.with_columns(combined.alias("rank.combined"))
    position = pl.col("rank.combined").rank("min").over("group").cast(pl.Int64)
    return table.select(
        "group", position.alias("position"), "dataset", "rank.combined", *rank_columns, *names
    ).sort("group", "position", "dataset", nulls_last=True)


def rank_candidates(proxies: pl.DataFrame, chosen: list[str] | None = None) -> pl.DataFrame:
    """One row per (group, dataset), best first within each group, combined by mean rank.

    Columns: group, position (1 = recommended; ties share the lowest), dataset,
    rank.combined, `rank.<proxy>` per proxy (mean rank over seeds), then `<proxy>` per proxy
    (mean raw value over seeds, for reference).
    """
    table = proxy_ranks(proxies, chosen)
    rank_columns = [c for c in table.columns if c.startswith("rank.")]
    return finish_ranking(table, pl.mean_horizontal(rank_columns))


def best_per_group(ranking: pl.DataFrame) -> dict[str, str]:
    """The recommended candidate set of each group (the first at position 1)."""
    best = ranking.filter(pl.col("position") == 1).unique(
        "group", keep="first", maintain_order=True
    )
    return dict(zip(best["group"], best["dataset"], strict=True))

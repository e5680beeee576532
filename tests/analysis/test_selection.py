"""The select ranking on hand-made tables: orientation, ties, seeds, combining proxies."""

from __future__ import annotations

import math

import polars as pl
import pytest

from synque import SynqueError
from synque.analysis import best_per_group, rank_candidates


def _frame(rows: list[tuple[str, str, str, str, float, bool]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema=["proxy", "group", "dataset", "seed", "value", "higher_is_better"],
        orient="row",
    )


def test_select_ranks_by_orientation_and_combines() -> None:
    rows = []
    for seed in ("1", "2"):
        for ds, good, bad in (("a", 0.9, 0.1), ("b", 0.5, 0.5), ("c", 0.1, 0.9)):
            rows.append(("mauve", "all", ds, seed, good, True))
            rows.append(("mmd", "all", ds, seed, bad, False))
    ranking = rank_candidates(_frame(rows))
    assert ranking["dataset"].to_list() == ["a", "b", "c"]
    assert ranking["rank.combined"].to_list() == [1.0, 2.0, 3.0]
    assert ranking["position"].to_list() == [1, 2, 3]
    assert ranking.columns == [
        "group", "position", "dataset", "rank.combined", "rank.mauve", "rank.mmd", "mauve", "mmd"
    ]  # fmt: skip
    only = rank_candidates(_frame(rows), ["mmd"])
    assert "rank.mauve" not in only.columns
    with pytest.raises(SynqueError, match="no logged values"):
        rank_candidates(_frame(rows), ["lens"])


def test_ties_seeds_and_groups() -> None:
    rows = [
        # g1, proxy p (higher better): seed 1 ranks x=1, y=z=2.5 (tie); seed 2 ranks z, y, x
        ("p", "g1", "x", "1", 0.9, True),
        ("p", "g1", "y", "1", 0.2, True),
        ("p", "g1", "z", "1", 0.2, True),
        ("p", "g1", "x", "2", 0.1, True),
        ("p", "g1", "y", "2", 0.5, True),
        ("p", "g1", "z", "2", 0.8, True),
        # q (lower better) ranks x, y, z in both seeds
        *[("q", "g1", d, s, float(v), False) for s in "12" for v, d in enumerate("xyz")],
        # another group is ranked on its own
        ("p", "g2", "u", "1", 0.3, True),
        ("p", "g2", "v", "1", float("nan"), True),  # a proxy that failed: no rank
        ("q", "g2", "u", "1", 5.0, False),
        ("q", "g2", "v", "1", 4.0, False),
    ]
    ranking = rank_candidates(_frame(rows))
    g1 = {r["dataset"]: r for r in ranking.filter(group="g1").iter_rows(named=True)}
    # p: x (1 + 3) / 2 = 2, y (2.5 + 2) / 2 = 2.25, z (2.5 + 1) / 2 = 1.75
    assert [g1[d]["rank.p"] for d in "xyz"] == [2.0, 2.25, 1.75]
    assert [g1[d]["rank.combined"] for d in "xyz"] == [1.5, 2.125, 2.375]
    assert [g1[d]["p"] for d in "xyz"] == pytest.approx([0.5, 0.35, 0.5])
    g2 = {r["dataset"]: r for r in ranking.filter(group="g2").iter_rows(named=True)}
    assert g2["v"]["rank.p"] is None or math.isnan(g2["v"]["rank.p"])
    assert g2["v"]["rank.combined"] == 1.0 and g2["u"]["rank.combined"] == 1.5  # (1 + 2) / 2
    assert best_per_group(ranking) == {"g1": "x", "g2": "v"}


def test_tied_combined_rank_shares_the_position() -> None:
    rows = [("p", "all", d, "1", v, True) for d, v in (("a", 1.0), ("b", 1.0), ("c", 0.0))]
    ranking = rank_candidates(_frame(rows))
    assert ranking["position"].to_list() == [1, 1, 3]
    assert best_per_group(ranking) == {"all": "a"}

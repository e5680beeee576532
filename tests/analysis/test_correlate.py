"""Correlation statistics, aggregation, top-k and the select ranking on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from synque.stages.correlate import batched_correlations, correlations, summarize, top_k
from synque.stages.select import rank_candidates


def test_batched_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(40, 9)).astype(float)  # many ties
    y = x + rng.normal(size=(40, 9))
    got = batched_correlations(x, y)
    for i in range(40):
        assert got["spearman"][i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic)
        assert got["kendall"][i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic)
        assert got["pearson"][i] == pytest.approx(stats.pearsonr(x[i], y[i]).statistic)


def test_correlations_undefined_cases() -> None:
    assert np.isnan(correlations(np.array([1.0, 2.0]), np.array([1.0, 2.0]))["spearman"])
    assert np.isnan(correlations(np.ones(4), np.arange(4.0))["pearson"])
    perfect = correlations(np.arange(5.0), np.arange(5.0) ** 3)
    assert perfect["spearman"] == pytest.approx(1.0)
    assert perfect["kendall"] == pytest.approx(1.0)
    assert perfect["pearson"] < 1.0


def test_top_k_orientation() -> None:
    values = np.array([0.1, 0.5, 0.3, 0.9])
    perf = np.array([10.0, 30.0, 20.0, 40.0])
    assert top_k(values, perf, 1, higher_is_better=True) == (40.0, 40.0)
    assert top_k(values, perf, 1, higher_is_better=False) == (10.0, 40.0)
    assert top_k(values, perf, 2, higher_is_better=True) == (35.0, 35.0)
    assert top_k(values, perf, 9, higher_is_better=True) == (25.0, 25.0)


def _table(rows: list[tuple[str, str, str, float]], hib: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["proxy", "group", "seed", "value"])
    frame["dataset"] = [f"d{i % 4}" for i in range(len(frame))]
    frame["higher_is_better"] = hib
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    return frame


def test_headline_is_mean_over_seeds_then_groups() -> None:
    perf = pd.DataFrame(
        {
            "group": ["g1"] * 4 + ["g2"] * 4,
            "dataset": ["d0", "d1", "d2", "d3"] * 2,
            "performance": [1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0],
        }
    )
    rows = []
    # g1: seed a agrees perfectly (+1), seed b reversed (-1) -> group mean 0
    rows += [("p", "g1", "a", v) for v in (1.0, 2.0, 3.0, 4.0)]
    rows += [("p", "g1", "b", v) for v in (4.0, 3.0, 2.0, 1.0)]
    # g2: performance falls d0..d3 and so does the proxy -> +1
    rows += [("p", "g2", "a", v) for v in (4.0, 3.0, 2.0, 1.0)]
    proxies = _table(rows)
    detail, summary = summarize(proxies, perf, [1], n_boot=50, confidence=0.9)
    assert len(detail) == 3
    by = detail.set_index(["group", "seed"]).spearman
    assert by[("g1", "a")] == pytest.approx(1)
    assert by[("g1", "b")] == pytest.approx(-1)
    assert by[("g2", "a")] == pytest.approx(1)
    row = summary.iloc[0]
    assert row.spearman == pytest.approx((0 + 1) / 2)
    assert row.spearman_lo <= row.spearman_hi
    assert row.n_groups == 2 and row.n_seeds == 2
    assert row.top1_oracle == pytest.approx(4.0)


def test_select_ranks_by_orientation_and_combines() -> None:
    rows = []
    for seed in ("1", "2"):
        for ds, good, bad in (("a", 0.9, 0.1), ("b", 0.5, 0.5), ("c", 0.1, 0.9)):
            rows.append(("mauve", ds, seed, good, True))
            rows.append(("mmd", ds, seed, bad, False))
    frame = pd.DataFrame(rows, columns=["proxy", "dataset", "seed", "value", "higher_is_better"])
    frame["group"] = "all"
    ranking = rank_candidates(frame)
    assert list(ranking.dataset) == ["a", "b", "c"]
    assert list(ranking["rank.combined"]) == [1.0, 2.0, 3.0]
    assert list(ranking.position) == [1, 2, 3]
    only = rank_candidates(frame, ["mmd"])
    assert "rank.mauve" not in only.columns
    with pytest.raises(Exception, match="no logged values"):
        rank_candidates(frame, ["lens"])

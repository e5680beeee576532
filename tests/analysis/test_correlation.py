"""Correlation maths on hand-made tables, checked against scipy computed independently."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from scipy import stats

from synque import SynqueError
from synque.analysis import (
    batched_correlations,
    correlations,
    select_performance,
    source_agreement,
    summarize,
    top_k,
)


def test_batched_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(40, 9)).astype(float)  # many ties
    y = x + rng.normal(size=(40, 9))
    got = batched_correlations(x, y)
    for i in range(40):
        assert got["spearman"][i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic)
        assert got["kendall"][i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic)
        assert got["pearson"][i] == pytest.approx(stats.pearsonr(x[i], y[i]).statistic)


@pytest.mark.parametrize("n", [3, 4, 9])
def test_resampled_from_counts_equals_resampling_each_seed(n: int) -> None:
    """The bootstrap's count form gives each resample's coefficients, ties and
    constant resamples (NaN) included, as resampling the values themselves does."""
    from synque.analysis.correlation import draw_counts, resampled_correlations

    rng = np.random.default_rng(n)
    x = rng.integers(0, 3, size=(4, n)).astype(float)  # ties, and constant resamples
    y = x[::-1] + rng.normal(size=(4, n))
    idx = rng.integers(0, n, size=(300, n))
    counts = draw_counts(idx)
    assert counts.sum(axis=1).tolist() == [n] * 300
    assert counts[7].tolist() == np.bincount(idx[7], minlength=n).tolist()
    got = resampled_correlations(x, y, counts)
    for s in range(4):
        want = batched_correlations(x[s][idx], y[s][idx])
        for coef in ("spearman", "kendall", "pearson"):
            np.testing.assert_allclose(got[coef][:, s], want[coef], rtol=0, atol=1e-12)


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


def _proxies(rows: list[tuple[str, str, str, str, float]], hib: dict[str, bool]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=["proxy", "group", "seed", "dataset", "value"], orient="row")
    return frame.with_columns(
        pl.col("proxy").replace_strict(hib, return_dtype=pl.Boolean).alias("higher_is_better"),
        pl.format("r{}", pl.int_range(pl.len())).alias("run_id"),
    )


def test_headline_is_mean_over_seeds_then_groups() -> None:
    perf = pl.DataFrame(
        {
            "group": ["g1"] * 4 + ["g2"] * 4,
            "dataset": ["d0", "d1", "d2", "d3"] * 2,
            "performance": [1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0],
        }
    )
    ds = ["d0", "d1", "d2", "d3"]
    rows = []
    # g1: seed a agrees perfectly (+1), seed b reversed (-1) -> group mean 0
    rows += [("p", "g1", "a", d, v) for d, v in zip(ds, (1.0, 2.0, 3.0, 4.0), strict=True)]
    rows += [("p", "g1", "b", d, v) for d, v in zip(ds, (4.0, 3.0, 2.0, 1.0), strict=True)]
    # g2: performance falls d0..d3 and so does the proxy -> +1
    rows += [("p", "g2", "a", d, v) for d, v in zip(ds, (4.0, 3.0, 2.0, 1.0), strict=True)]
    detail, summary = summarize(_proxies(rows, {"p": True}), perf, [1], n_boot=50, confidence=0.9)
    assert len(detail) == 3
    by = {(r["group"], r["seed"]): r["spearman"] for r in detail.iter_rows(named=True)}
    assert by == pytest.approx({("g1", "a"): 1, ("g1", "b"): -1, ("g2", "a"): 1})
    row = summary.row(0, named=True)
    assert row["spearman"] == pytest.approx((0 + 1) / 2)  # not (1 - 1 + 1) / 3
    assert row["spearman_lo"] <= row["spearman_hi"]
    assert (row["n_groups"], row["n_seeds"], row["n_datasets"]) == (2, 2, 8)
    assert row["top1_oracle"] == pytest.approx(4.0)
    # top-1 per (group, seed): g1/a picks d3 (4), g1/b picks d0 (1), g2/a picks d0 (4)
    assert row["top1"] == pytest.approx(((4 + 1) / 2 + 4) / 2)


# --- an independent computation of the whole summary --------------------------------------
HAND_PROXIES = {"lens": True, "mmd": False}
HAND_PERF = {
    "g1": {"a": 0.61, "b": 0.55, "c": 0.70, "d": 0.40, "e": 0.52},
    "g2": {"a": 0.30, "b": 0.35, "c": 0.33, "d": 0.50},
}


def _hand_table() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two groups, three seeds, two proxies; ties, a constant seed and a missing value."""
    rng = np.random.default_rng(7)
    rows = []
    for proxy in HAND_PROXIES:
        for group, perf in HAND_PERF.items():
            for seed in ("42", "43", "44"):
                for dataset, p in perf.items():
                    if (proxy, group, seed, dataset) == ("mmd", "g1", "44", "e"):
                        continue  # a set this seed never logged: left out of the bootstrap
                    value = round(p + rng.normal(scale=0.08), 1)  # rounding makes ties
                    if (proxy, group, seed) == ("lens", "g2", "43"):
                        value = 0.5  # a constant proxy: coefficients undefined
                    rows.append((proxy, group, seed, dataset, value))
    perf = pl.DataFrame(
        [(g, d, p) for g, sets in HAND_PERF.items() for d, p in sets.items()],
        schema=["group", "dataset", "performance"],
        orient="row",
    )
    return _proxies(rows[::-1], HAND_PROXIES), perf  # reversed: order must not matter


def _scipy_coefs(x: np.ndarray, y: np.ndarray) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            stats.spearmanr(x, y).statistic,
            stats.kendalltau(x, y).statistic,
            stats.pearsonr(x, y).statistic if np.ptp(x) and np.ptp(y) else np.nan,
        ]


def _expected(proxies: pl.DataFrame, n_boot: int, seed: int) -> dict[str, dict[str, float]]:
    """Loops over plain dicts and scipy: headline and percentile bootstrap per proxy."""
    values: dict = {}
    for r in proxies.iter_rows(named=True):
        values.setdefault(r["proxy"], {}).setdefault(r["group"], {}).setdefault(r["seed"], {})
        values[r["proxy"]][r["group"]][r["seed"]][r["dataset"]] = r["value"]
    rng = np.random.default_rng(seed)
    out = {}
    for proxy in sorted(values):  # the contract: proxies, groups and sets in name order
        heads, boots = [], []
        for group in sorted(values[proxy]):
            names = sorted(HAND_PERF[group])
            idx = rng.integers(0, len(names), size=(n_boot, len(names)))
            seeds_head, seeds_boot = [], []
            for _seed, by_set in sorted(values[proxy][group].items()):
                x = np.array([by_set[n] for n in sorted(by_set)])
                y = np.array([HAND_PERF[group][n] for n in sorted(by_set)])
                seeds_head.append(_scipy_coefs(x, y))
                if set(by_set) == set(names):
                    # every set present: sorted(by_set) == names, so x, y follow `idx`
                    seeds_boot.append([_scipy_coefs(x[i], y[i]) for i in idx])
            heads.append(np.nanmean(seeds_head, axis=0))
            boots.append(np.nanmean(seeds_boot, axis=0))
        row = dict(zip(("spearman", "kendall", "pearson"), np.nanmean(heads, axis=0), strict=True))
        boot = np.nanmean(boots, axis=0)  # (n_boot, 3)
        for j, coef in enumerate(("spearman", "kendall", "pearson")):
            row[f"{coef}_lo"], row[f"{coef}_hi"] = np.nanquantile(boot[:, j], [0.05, 0.95])
        out[proxy] = row
    return out


def test_summary_matches_an_independent_scipy_computation() -> None:
    proxies, perf = _hand_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = _expected(proxies, n_boot=40, seed=3)
    detail, summary = summarize(proxies, perf, [1, 2], n_boot=40, confidence=0.9, seed=3)
    assert detail.height == 2 * 2 * 3
    constant = detail.filter(pl.col("proxy") == "lens", pl.col("group") == "g2", seed="43")
    assert constant["spearman"].is_null().all()
    assert summary["proxy"].to_list() == sorted(expected, key=lambda p: -expected[p]["spearman"])
    for row in summary.iter_rows(named=True):
        for column, value in expected[row["proxy"]].items():
            assert row[column] == pytest.approx(value, abs=1e-12), (row["proxy"], column)


def _expected_top(proxies: pl.DataFrame, proxy: str, k: int) -> tuple[float, float, float]:
    """(top-k, oracle, mean of all) by sorting plain lists: per group and seed, then means."""
    per_group = {}
    for r in proxies.filter(proxy=proxy).sort("dataset").iter_rows(named=True):
        per_group.setdefault(r["group"], {}).setdefault(r["seed"], []).append(r)
    sign = 1 if HAND_PROXIES[proxy] else -1
    groups = []
    for group, seeds in per_group.items():
        rows = []
        for sets in seeds.values():
            perf = [HAND_PERF[group][r["dataset"]] for r in sets]
            best = sorted(sets, key=lambda r: -sign * r["value"])[:k]  # stable: ties by name
            picked = [HAND_PERF[group][r["dataset"]] for r in best]
            rows.append((np.mean(picked), np.mean(sorted(perf)[-k:]), np.mean(perf)))
        groups.append(np.mean(rows, axis=0))
    return tuple(np.mean(groups, axis=0))


def test_top_k_and_counts_on_the_hand_table() -> None:
    proxies, perf = _hand_table()
    _, summary = summarize(proxies, perf, [2], n_boot=0, confidence=0.9)
    assert "spearman_lo" not in summary.columns  # no bootstrap asked, no CI columns
    mmd = summary.filter(proxy="mmd").row(0, named=True)
    assert (mmd["n_groups"], mmd["n_seeds"], mmd["n_datasets"]) == (2, 3, 9)
    # by hand: g1 oracle top-2 = (0.70 + 0.61) / 2 for every seed, g2 = (0.50 + 0.35) / 2
    assert mmd["top2_oracle"] == pytest.approx(((0.70 + 0.61) / 2 + (0.50 + 0.35) / 2) / 2)
    for proxy in HAND_PROXIES:
        row = summary.filter(proxy=proxy).row(0, named=True)
        top, oracle, mean_all = _expected_top(proxies, proxy, 2)
        assert (row["top2"], row["top2_oracle"], row["mean_all"]) == pytest.approx(
            (top, oracle, mean_all)
        )


def test_select_performance_and_source_agreement() -> None:
    perf = pl.DataFrame(
        {
            "source": ["recorded"] * 4 + ["trained"] * 8,
            "group": "all",
            "dataset": ["a", "b", "c", "d"] * 3,
            "seed": ["none"] * 4 + ["1"] * 4 + ["2"] * 4,
            "value": [0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.7, 0.4, 0.1, 0.0],
        }
    )
    table, source = select_performance(perf, "auto")
    assert source == "recorded" and table["performance"].to_list() == [0.1, 0.2, 0.3, 0.4]
    trained, _ = select_performance(perf, "trained")
    assert trained["performance"].to_list() == pytest.approx([0.6, 0.4, 0.2, 0.1])
    assert source_agreement(perf) == pytest.approx(-1.0)
    with pytest.raises(SynqueError, match="no 'other' performance"):
        select_performance(perf, "other")
    with pytest.raises(SynqueError, match="no train runs"):
        select_performance(perf.clear(), "auto")

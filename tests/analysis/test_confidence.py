"""Confidence of `select`: Kendall's W by hand, resampling shares with a known answer, verdicts."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import chi2, norm

from synque.analysis.confidence import (
    CONFIDENT,
    DISAGREE,
    WEAK,
    Thresholds,
    available_sources,
    confidence,
    confidence_lines,
    confidence_logs,
    confidence_markdown,
    kendalls_w,
    overall,
    reason,
    stability,
    summary_line,
    verdict,
)
from synque.analysis.selection import rank_candidates


def _long(values: dict[tuple[str, str, str], float], noise: float | None = None) -> pl.DataFrame:
    """Long proxy table from {(proxy, seed, dataset): value}; every proxy higher-is-better."""
    rows = [
        {
            "proxy": p,
            "metric": p,
            "higher_is_better": True,
            "group": "all",
            "dataset": d,
            "seed": s,
            "value": v,
            "run_id": f"{p}-{s}-{d}",
        }
        for (p, s, d), v in values.items()
    ]
    frame = pl.DataFrame(rows)
    return frame if noise is None else frame.with_columns(pl.lit(noise).alias("noise"))


# --- Kendall's W ----------------------------------------------------------------------------------


def test_kendalls_w_by_hand_without_ties() -> None:
    # rank sums 4, 6, 8, 12 around 7.5: S = 35, W = 12 S / (m^2 (n^3 - n)) = 420 / 540
    ranks = np.array([[1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 3, 4]])
    w, p = kendalls_w(ranks)
    assert w == pytest.approx(7 / 9)
    friedman = 3 * (4 - 1) * 7 / 9  # m (n - 1) W, chi-square with n - 1 df
    assert p == pytest.approx(chi2.sf(friedman, 3))


def test_kendalls_w_by_hand_with_ties_and_raw_scores() -> None:
    # rater 1 ties items 2 and 3: sums 2, 4.5, 5.5 around 4, S = 6.5, T = 2^3 - 2 = 6
    # W = 12 S / (m^2 (n^3 - n) - m T) = 78 / (96 - 12)
    scores = np.array([[0.1, 5.0, 5.0], [3.0, 4.0, 9.0]])  # ranked per rater, low = rank 1
    assert kendalls_w(scores)[0] == pytest.approx(78 / 84)


def test_kendalls_w_extremes_and_undefined() -> None:
    same = np.tile(np.arange(1, 6), (4, 1))
    assert kendalls_w(same)[0] == pytest.approx(1.0)
    assert kendalls_w(np.vstack([np.arange(5), np.arange(5)[::-1]]))[0] == pytest.approx(0.0)
    assert math.isnan(kendalls_w(np.array([[1, 2, 3]]))[0])  # one rater
    assert math.isnan(kendalls_w(np.array([[1, 2], [2, 1]]))[0])  # two items
    assert math.isnan(kendalls_w(np.ones((3, 4)))[0])  # nobody ranks anything


# --- stability ----------------------------------------------------------------------------------


def test_proxy_resampling_share_matches_the_binomial() -> None:
    # p1 and p3 put A first, p2 puts B first. A stays first iff at most one of three drawn
    # proxies is p2: P = (2/3)^3 + 3 (1/3) (2/3)^2 = 20/27. C and D are always last.
    order = {"p1": "ABCD", "p2": "BACD", "p3": "ABCD"}
    values = {(p, "1", d): -float(o.index(d)) for p, o in order.items() for d in "ABCD"}
    frame = _long(values)
    assert available_sources(frame) == ["proxies", "all"]
    shares = stability(frame, rank_candidates, {"all": "A"}, resamples=4000, seed=3)
    row = shares.filter(source="proxies").row(0, named=True)
    assert row["top1"] == pytest.approx(20 / 27, abs=0.025)
    assert row["top3"] == 1.0


def test_noise_resampling_share_matches_the_normal() -> None:
    # one proxy, one seed: A = 1.0, B = 0.9, each with noise 0.1. A stays first iff
    # 0.1 + N(0, 0.1^2) - N(0, 0.1^2) > 0: P = Phi(0.1 / (0.1 sqrt 2))
    frame = _long({("p", "1", "A"): 1.0, ("p", "1", "B"): 0.9, ("p", "1", "C"): 0.0}, noise=0.1)
    assert available_sources(frame) == ["noise", "all"]
    shares = stability(frame, rank_candidates, {"all": "A"}, resamples=4000, seed=4)
    top1 = shares.filter(source="noise")["top1"][0]
    assert top1 == pytest.approx(norm.cdf(1 / math.sqrt(2)), abs=0.025)


def test_seed_resampling_share_counts_ties_as_first() -> None:
    # one proxy, two seeds: seed 1 puts A first, seed 2 puts B first. Drawing {1, 1} keeps A
    # first, {2, 2} does not, {1, 2} ties A and B (both first): P = 3/4.
    values = {("p", "1", d): v for d, v in zip("ABC", (3.0, 2.0, 0.0), strict=True)}
    values |= {("p", "2", d): v for d, v in zip("ABC", (2.0, 3.0, 0.0), strict=True)}
    frame = _long(values)
    assert available_sources(frame) == ["seeds", "all"]
    shares = stability(frame, rank_candidates, {"all": "A"}, resamples=4000, seed=5)
    row = shares.filter(source="seeds").row(0, named=True)
    assert row["top1"] == pytest.approx(0.75, abs=0.025)
    assert row["top3"] == 1.0


def test_a_clear_winner_is_confident_and_noise_free_sets_have_no_noise_source() -> None:
    rng = np.random.default_rng(0)
    values = {
        (p, s, d): (10.0 if d == "A" else float(rng.normal()))
        for p in ("p1", "p2", "p3", "p4")
        for s in ("42", "43", "44")
        for d in "ABCDEF"
    }
    frame = _long(values)
    ranking = rank_candidates(frame)
    table = confidence(frame, ranking, rank_candidates, resamples=50)
    row = table.row(0, named=True)
    assert row["recommended"] == "A" and row["n_seeds"] == 3 and row["n_proxies"] == 4
    assert row["top1"] == 1.0 and row["top1.seeds"] == 1.0 and row["top1.proxies"] == 1.0
    assert row["top1.noise"] is None  # nothing logged: no noise to resample
    assert row["verdict"] == CONFIDENT


def test_opposed_proxies_are_a_disagreement() -> None:
    values = {("up", "1", d): float(i) for i, d in enumerate("ABCDE")}
    values |= {("down", "1", d): -float(i) + 0.5 * (d == "A") for i, d in enumerate("ABCDE")}
    frame = _long(values)
    table = confidence(frame, rank_candidates(frame), rank_candidates, resamples=50)
    assert table["kendall_w"][0] < 0.3
    assert table["verdict"][0] == DISAGREE


# --- verdict and what the user sees ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "n_proxies", "top1", "top3", "want"),
    [
        (0.8, 4, 0.9, 1.0, CONFIDENT),
        (0.8, 4, 0.7, 1.0, WEAK),  # agree, but the pick is not stable enough
        (0.4, 4, 0.9, 1.0, WEAK),  # stable, but only moderate agreement
        (0.2, 4, 1.0, 1.0, DISAGREE),
        (0.9, 4, 0.3, 0.4, DISAGREE),  # leaves the top 3 more often than not
        (math.nan, 1, 0.85, 1.0, CONFIDENT),  # one proxy: stability alone
        (0.9, 4, math.nan, math.nan, WEAK),  # nothing could be resampled
    ],
)
def test_verdict_rule(w: float, n_proxies: int, top1: float, top3: float, want: str) -> None:
    assert verdict(w, n_proxies, top1, top3, Thresholds()) == want


def test_lines_markdown_and_logs() -> None:
    values = {
        (p, s, d): float(i) * (1 if p != "p3" else -1) + (s == "2") * 0.1
        for p in ("p1", "p2", "p3")
        for s in ("1", "2")
        for i, d in enumerate("ABCD")
    }
    frame = _long(values).with_columns(pl.lit("g.one").alias("group"))
    table = confidence(frame, rank_candidates(frame), rank_candidates, resamples=20)
    lines = confidence_lines(table, 20)
    assert all(len(line) <= 80 for line in lines)
    assert lines[1] == f"g.one: {table['verdict'][0]}"
    note = confidence_markdown(table, 20)
    assert "| g.one |" in note and f"**{table['verdict'][0]}**" in note
    metrics, tags = confidence_logs(table)
    assert tags == {"synque.verdict.g.one": table["verdict"][0], "synque.verdict": overall(table)}
    assert sum(metrics[f"confidence.groups_{v}"] for v in ("confident", "weak", "disagree")) == 1
    assert metrics["confidence.kendall_w.g.one"] == pytest.approx(table["kendall_w"][0])
    assert metrics["confidence.top1_seeds.g.one"] == table["top1.seeds"][0]
    assert "confidence.top1_noise.g.one" not in metrics


def test_overall_verdict_and_summary_line() -> None:
    def table(verdicts: list[str]) -> pl.DataFrame:
        return pl.DataFrame(
            {"verdict": verdicts, "kendall_w": [0.1 * (i + 1) for i in range(len(verdicts))]}
        )

    assert overall(table([CONFIDENT, CONFIDENT])) == CONFIDENT
    assert overall(table([CONFIDENT, WEAK])) == WEAK
    assert overall(table([CONFIDENT, DISAGREE, WEAK])) == WEAK
    assert overall(table([CONFIDENT, DISAGREE, WEAK, DISAGREE])) == DISAGREE
    line = summary_line(table([CONFIDENT, DISAGREE, WEAK, DISAGREE]))
    assert line == "4 groups: 1 confident, 1 weak, 2 disagree; median W 0.25"
    assert summary_line(table([WEAK])) == ""


def test_reasons_say_why() -> None:
    limits = Thresholds()
    assert reason(0.1, 4, 1.0, 1.0, limits) == "the proxies order the sets differently"
    assert reason(0.9, 4, 0.2, 0.3, limits) == "the pick often leaves the top 3"
    assert reason(0.9, 4, 0.9, 1.0, limits) == "the proxies agree and the pick holds"
    assert "compare the top 3" in reason(0.7, 4, 0.4, 0.75, limits)
    assert reason(0.4, 4, 0.9, 1.0, limits) == "the proxies agree only moderately"
    assert reason(0.9, 4, math.nan, math.nan, limits).startswith("nothing to resample")

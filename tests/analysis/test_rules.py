"""Selection rules on hand-made rankings: each rule's combined rank worked out by hand."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from omegaconf import OmegaConf

from synque import SynqueError
from synque.analysis import rank_candidates
from synque.analysis.report import print_ranking
from synque.analysis.rules import (
    AgreementRank,
    MeanRank,
    MedianRank,
    SingleProxy,
    WeightedRank,
    agreement_weights,
    agreement_weights_many,
    all_rule_values,
    build_rules,
    rank_with_rule,
    rule_values,
    stage_rule,
    stage_rule_nodes,
)

SETS = ["a", "b", "c", "d"]


def _frame(ranks: dict[str, list[float]], seeds: tuple[str, ...] = ("1",)) -> pl.DataFrame:
    """Proxy values that rank SETS as given (rank 1 = best) for every seed; proxies whose
    name starts with `low` are lower-is-better, so their value is the rank itself."""
    rows = []
    for seed in seeds:
        for proxy, order in ranks.items():
            higher = not proxy.startswith("low")
            for ds, rank in zip(SETS, order, strict=True):
                rows.append((proxy, "all", ds, seed, -rank if higher else rank, higher))
    schema = ["proxy", "group", "dataset", "seed", "value", "higher_is_better"]
    return pl.DataFrame(rows, schema=schema, orient="row")


def _combined(ranking: pl.DataFrame) -> dict[str, float]:
    return dict(zip(ranking["dataset"], ranking["rank.combined"], strict=True))


def test_mean_rank_is_todays_select() -> None:
    frame = _frame({"p": [1, 2, 3, 4], "lowq": [2, 1, 4, 3], "r": [4, 3, 2, 1]}, ("1", "2"))
    ranking = rank_with_rule(frame, MeanRank())
    assert ranking.equals(rank_candidates(frame))
    assert _combined(ranking) == pytest.approx({"a": 7 / 3, "b": 2, "c": 3, "d": 8 / 3})
    assert ranking["dataset"].to_list() == ["b", "a", "d", "c"]
    only = rank_with_rule(frame, MeanRank(proxies=["p", "lowq"]))
    assert ranking.columns[:4] == only.columns[:4] and "rank.r" not in only.columns
    with pytest.raises(SynqueError, match=r"rule\.MeanRank\.proxies: no logged values"):
        rank_with_rule(frame, MeanRank(proxies=["lens"]))


def test_median_rank_ignores_one_bad_proxy() -> None:
    # two proxies agree on a > b > c > d; a third is reversed and pulls the mean to a tie
    frame = _frame({"p": [1, 2, 3, 4], "q": [1, 2, 3, 4], "bad": [4, 3, 2, 1]})
    median = _combined(rank_with_rule(frame, MedianRank()))
    assert median == {"a": 1, "b": 2, "c": 3, "d": 4}
    mean = _combined(rank_with_rule(frame, MeanRank()))
    assert mean == pytest.approx({"a": 2, "b": 7 / 3, "c": 8 / 3, "d": 3})


def test_agreement_weights_drop_the_proxy_that_contradicts_the_rest() -> None:
    good = [1.0, 2.0, 3.0, 4.0]
    ranks = np.column_stack([good, good, good, good[::-1]])
    # each good proxy: tau 1, 1, -1 with the others -> 1/3; the reversed one: -1 -> 0
    assert agreement_weights(ranks) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    frame = _frame({"p": good, "q": good, "r": good, "bad": good[::-1]})
    assert _combined(rank_with_rule(frame, AgreementRank())) == {"a": 1, "b": 2, "c": 3, "d": 4}
    # total disagreement leaves equal weights, i.e. the mean rank
    assert agreement_weights(np.column_stack([good, good[::-1]])) == pytest.approx([1, 1])
    # a proxy with no value anywhere gets no weight and does not count
    assert agreement_weights(np.column_stack([good, good, [np.nan] * 4]))[2] == 0


def test_pairwise_taus_are_scipys_kendall_tau_b_on_the_rows_both_proxies_have() -> None:
    from scipy.stats import kendalltau

    from synque.analysis.rules import _pairwise_taus

    rng = np.random.default_rng(7)
    blocks = []
    for _ in range(40):
        m, n = rng.integers(3, 15), 4
        ranks = rng.integers(1, 6, size=(m, n)).astype(float)  # ties on purpose
        ranks[rng.random((m, n)) < 0.2] = np.nan
        blocks.append(ranks)
        taus = _pairwise_taus(ranks)
        for i in range(n):
            for j in range(n):
                keep = ~(np.isnan(ranks[:, i]) | np.isnan(ranks[:, j]))
                expected = kendalltau(ranks[keep, i], ranks[keep, j]).statistic
                if np.isnan(expected):
                    assert np.isnan(taus[i, j])
                else:
                    assert taus[i, j] == pytest.approx(expected, abs=1e-12)
    # groups of different heights stacked (NaN padding) weigh exactly as one at a time
    stacked = agreement_weights_many(blocks)
    for block, weights in zip(blocks, stacked, strict=True):
        assert np.array_equal(agreement_weights(block), weights)


def test_single_proxy_orientation_variants_and_errors() -> None:
    frame = _frame({"lowpad@x": [3, 1, 2, 4], "mdm": [1, 2, 3, 4]})
    ranking = rank_with_rule(frame, SingleProxy("lowpad"))  # the one variant of the metric
    assert ranking["dataset"].to_list() == ["b", "c", "a", "d"]
    assert {"rank.mdm", "rank.lowpad@x"} <= set(ranking.columns)  # the others shown beside
    with pytest.raises(SynqueError, match=r"rule\.SingleProxy\.proxy: no single proxy 'lens'"):
        rank_with_rule(frame, SingleProxy("lens"))
    two = _frame({"pad@x": [1, 2, 3, 4], "pad@y": [4, 3, 2, 1]})
    with pytest.raises(SynqueError, match="several variants"):
        rank_with_rule(two, SingleProxy("pad"))


def test_weighted_rank_by_hand_with_variants_and_held_out_weights() -> None:
    frame = _frame({"p": [1, 2, 3, 4], "q": [4, 3, 2, 1], "mdm@x": [2, 1, 4, 3]})
    rule = WeightedRank({"p": 3, "q": 1}, held_out={"sentiment": {"q": 1.0}})
    # (3 p + 1 q) / 4; mdm has no weight
    assert _combined(rank_with_rule(frame, rule)) == pytest.approx(
        {"a": 7 / 4, "b": 9 / 4, "c": 11 / 4, "d": 13 / 4}
    )
    held = rank_with_rule(frame, rule, task="sentiment")  # learned without sentiment: q only
    assert held["dataset"].to_list() == ["d", "c", "b", "a"]
    assert rank_with_rule(frame, rule, task="web")["dataset"][0] == "a"
    split = WeightedRank({"pad": 1.0})  # one metric on two embedders shares its weight
    assert split.vector(["mdm", "pad@a", "pad@b"]) == pytest.approx([0, 0.5, 0.5])
    with pytest.raises(SynqueError, match="no weighted proxy among"):
        rank_with_rule(frame, WeightedRank({"lens": 1.0}))
    with pytest.raises(SynqueError, match="non-negative"):
        WeightedRank({"p": -1.0})


def test_rule_values_score_each_seed_on_its_own() -> None:
    seed1 = _frame({"p": [1, 2, 3, 4], "q": [1, 2, 3, 4]}, ("1",))
    seed2 = _frame({"p": [4, 3, 2, 1], "q": [4, 3, 2, 1]}, ("2",))
    values = rule_values(pl.concat([seed1, seed2]), MeanRank())
    assert set(values["proxy"]) == {"rule:MeanRank"} and values["higher_is_better"].all()
    by = {(r["seed"], r["dataset"]): r["value"] for r in values.iter_rows(named=True)}
    assert [by["1", d] for d in SETS] == [-1, -2, -3, -4]
    assert [by["2", d] for d in SETS] == [-4, -3, -2, -1]  # not averaged with seed 1
    rows, skipped = all_rule_values(seed1, {"mean": MeanRank(), "lens": SingleProxy("lens")})
    assert set(rows["proxy"]) == {"rule:mean"} and list(skipped) == ["lens"]


def test_build_rules_from_config_nodes() -> None:
    nodes = OmegaConf.create(
        {
            "mean_rank": {"_target_": "synque.analysis.rules.MeanRank", "proxies": None},
            "pick": {"_target_": "synque.analysis.rules.SingleProxy", "proxy": "mdm"},
        }
    )
    rules = build_rules(nodes)
    assert isinstance(rules["pick"], SingleProxy) and rules["pick"].name == "pick"
    with pytest.raises(SynqueError, match=r"rule\.pick\.proxi: unknown key; did you mean proxy"):
        build_rules({"pick": {"_target_": "synque.analysis.rules.SingleProxy", "proxi": "x"}})
    with pytest.raises(SynqueError, match=r"rule\.x\._target_: .* is not a rule"):
        build_rules({"x": {"_target_": "builtins.dict"}})


def test_print_ranking_two_decimals_and_a_title_that_fits_80_columns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds = _frame({"p": [1, 2, 3, 4], "q": [2, 1, 3, 4]}, ("1", "2", "3"))
    seeds = seeds.with_columns(  # seed 3 of q reverses a and b: q's mean ranks 5/3 and 4/3
        pl.when((pl.col("seed") == "3") & (pl.col("proxy") == "q"))
        .then(pl.col("value").replace({-1: -2, -2: -1}))
        .otherwise(pl.col("value"))
        .alias("value")
    )
    ranking = rank_with_rule(seeds, MeanRank())
    print_ranking(ranking, "sentiment", 10, rule="mean_rank")
    out = capsys.readouterr().out
    assert "1.67" in out and "1.66667" not in out
    rows = [line.split("│")[3:-1] for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 4 and all(re.fullmatch(r"\d\.\d\d", c.strip()) for r in rows for c in r)
    title = next(line for line in out.splitlines() if "synque-sentiment" in line)
    assert len(title.strip()) <= 80


def test_stage_rules_composed_by_hydra_or_loaded_by_a_pipeline(make_cfg) -> None:
    cfg = make_cfg("+experiment=sentiment_correlate")
    composed = stage_rule_nodes(cfg.stage)
    assert {"mean_rank", "median_rank", "agreement_rank", "learned_rank"} <= set(composed)
    raw = OmegaConf.load(Path(__file__).parents[2] / "configs" / "stage" / "correlate.yaml")
    assert stage_rule_nodes(raw).keys() == composed.keys()  # a pipeline step loads the file
    picked = make_cfg("+experiment=sentiment_correlate", "rule@stage.rules=[single]")
    assert isinstance(stage_rule(picked.stage, "single"), SingleProxy)
    with pytest.raises(SynqueError, match="stage.rule: unknown rule 'mean_rank'"):
        stage_rule(picked.stage, "mean_rank")


def test_a_rule_is_scored_like_the_proxy_it_copies() -> None:
    """Correlate's view of a rule: SingleProxy(mmd) has mmd's coefficients (sign flipped:
    the rule is oriented, mmd is lower-is-better), its top-k and a regret >= 0."""
    rng = np.random.default_rng(3)
    perf = pl.DataFrame({"group": "all", "dataset": SETS * 1, "performance": [4.0, 3, 2, 1]})
    rows = [
        ("lowmmd", "all", d, s, float(v), False)
        for s in ("1", "2", "3")
        for d, v in zip(SETS, rng.permutation(4), strict=True)
    ]
    schema = ["proxy", "group", "dataset", "seed", "value", "higher_is_better"]
    proxies = pl.DataFrame(rows, schema=schema, orient="row")
    from synque.analysis import summarize

    rule_rows, _ = all_rule_values(proxies, {"copy": SingleProxy("lowmmd")})
    _, own = summarize(proxies, perf, [1, 3], n_boot=0, confidence=0.9)
    _, ruled = summarize(rule_rows, perf, [1, 3], n_boot=0, confidence=0.9)
    a, b = own.row(0, named=True), ruled.row(0, named=True)
    assert b["proxy"] == "rule:copy"
    for coef in ("spearman", "kendall"):
        assert b[coef] == pytest.approx(-a[coef])
    for key in ("top1", "top3", "top3_oracle", "mean_all", "regret1", "regret3"):
        assert b[key] == pytest.approx(a[key])
    assert b["regret1"] == pytest.approx(b["top1_oracle"] - b["top1"]) and b["regret1"] >= 0

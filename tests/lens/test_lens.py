"""LENS core: the score formulas on hand-computed cases, orientation mapping, parsers."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from synque import SynqueError
from synque.lens import (
    JUDGMENT_COLUMNS,
    PROB_COLUMNS,
    JudgeItem,
    Rubric,
    RubricError,
    compile_rubric,
    judge_examples,
    judge_requests,
    judgments_from_released,
    lens_scores,
    load_prompts,
    parse_likert,
    parse_string_list,
    rubrics_from_released,
)
from synque.llm import Completion
from tests.fakes.judges import OracleJudge, Scripted

PROMPTS = load_prompts("default")


def frame(synth: Sequence[Sequence[float]], real: Sequence[Sequence[float]]) -> pl.DataFrame:
    """Judgments table from rows (v_real_A, v_synth_A, v_real_B, v_synth_B)."""
    rows = [("synthetic", i, *r) for i, r in enumerate(synth)]
    rows += [("real", i, *r) for i, r in enumerate(real)]
    return pl.DataFrame(rows, schema=["set", "index", *JUDGMENT_COLUMNS], orient="row")


# --------------------------------------------------------------------------- formulas


def test_lens_hand_computed() -> None:
    synth = [(3, 1, 2, 2), (0, 0, 4, 0)]
    real = [(4, 0, 2, 2), (2, 2, 0, 2)]
    # raw: s1 = 1/2 (3/(3+1) + 2/(2+2)) = 0.625; s2 = 1/2 (0/max(eps, 0) + 4/4) = 0.5
    raw = (0.625 + 0.5) / 2
    # muR = (3, 1, 1, 2); muS = (1.5, 0.5, 3, 1)
    # e(s1):  A h_r = 3/3 = 1, h_s = 1/1 = 1 -> 1/2;  B h_r = 2/1, h_s = 2/2 -> 2/3
    # e(s2):  A 0/(0+eps) = 0;                         B h_r = 4/1, h_s = 0 -> 1
    # e'(r1): A h_r = 4/1.5, h_s = 0 -> 0;              B h_r = 2/3, h_s = 2/1 -> 2/(8/3) = 3/4
    # e'(r2): A h_r = 2/1.5, h_s = 2/0.5 = 4 -> 4/(16/3) = 3/4;  B h_r = 0, h_s = 2 -> 1
    e = [0.5 * (0.5 + 2 / 3), 0.5 * (0 + 1), 0.5 * (0 + 0.75), 0.5 * (0.75 + 1)]
    scores = lens_scores(frame(synth, real))
    assert scores["lens_raw"] == pytest.approx(raw, abs=1e-9)
    assert scores["lens"] == pytest.approx(sum(e) / 4, abs=1e-5)
    assert set(scores) == {"lens", "lens_raw"}


def test_lens_zero_mean_on_real_is_clamped_to_eps() -> None:
    # muR = (2, eps, 2, 2): synthetic h_s on A = 2/eps, so its A term ~ 0.
    # e(s) = 1/2 (1/(1 + 2e6) + 1/2) ~ 0.25;  muS = (2, 2, 2, 2): e'(r) = 1/2 (0 + 1/2) = 0.25
    scores = lens_scores(frame([(2, 2, 2, 2)], [(2, 0, 2, 2)]))
    assert scores["lens"] == pytest.approx(0.25, abs=1e-5)
    assert scores["lens_raw"] == pytest.approx(0.5)


def test_lens_zero_mean_on_synthetic_becomes_one() -> None:
    # muS = (0, 0, 0, 0) -> replaced by 1; muR = (1, 1, 1, 1)
    # e(s) = 0 (all zero: 0/(0+eps)); e'(r) = 1/2 (1/(2+eps) * 2) = 0.5; LENS = 0.5/2
    scores = lens_scores(frame([(0, 0, 0, 0)], [(1, 1, 1, 1)]))
    assert scores["lens"] == pytest.approx(0.25, abs=1e-5)
    # raw: 0/max(eps, 0) = 0 for both orientations
    assert scores["lens_raw"] == 0.0


def test_lens_perfectly_separable_is_zero_and_indistinguishable_is_half() -> None:
    separable = lens_scores(frame([(0, 4, 0, 4)] * 3, [(4, 0, 4, 0)] * 3))
    assert separable["lens"] == pytest.approx(0.0, abs=1e-5)
    assert separable["lens_raw"] == 0.0
    same = lens_scores(frame([(3, 3, 3, 3)] * 2, [(3, 3, 3, 3)] * 2))
    assert same["lens"] == pytest.approx(0.5, abs=1e-5)
    assert same["lens_raw"] == pytest.approx(0.5)


def test_expected_variant() -> None:
    judg = frame([(3, 1, 2, 2), (0, 0, 4, 0)], [(4, 0, 2, 2), (2, 2, 0, 2)])
    # one-hot probabilities -> expected scores equal the argmax scores
    for col in JUDGMENT_COLUMNS:
        for k in range(5):
            judg = judg.with_columns((pl.col(col) == k).cast(pl.Float64).alias(f"p{col[1:]}_{k}"))
    scores = lens_scores(judg)
    assert scores["lens_expected"] == pytest.approx(scores["lens"])
    assert scores["lens_raw_expected"] == pytest.approx(scores["lens_raw"])
    # uniform probabilities -> every expected score is 2 -> both scores 1/2
    judg = judg.with_columns(pl.lit(0.2).alias(col) for col in PROB_COLUMNS)
    scores = lens_scores(judg)
    assert scores["lens_expected"] == pytest.approx(0.5, abs=1e-5)
    assert scores["lens_raw_expected"] == pytest.approx(0.5)


def test_lens_needs_both_sets_and_columns() -> None:
    with pytest.raises(SynqueError, match="both synthetic and real"):
        lens_scores(frame([(1, 1, 1, 1)], []))
    with pytest.raises(SynqueError, match="v_synth_B"):
        lens_scores(frame([(1, 1, 1, 1)], [(1, 1, 1, 1)]).drop("v_synth_B"))


# --------------------------------------------------------------------------- orientation


def test_orientation_columns_and_differences() -> None:
    rubric = Rubric(["alike"], ["S-vs-R point"], ["R-vs-S point"])
    items = judge_requests(rubric, PROMPTS, ["s0"], ["r0"])
    assert len(items) == 8
    got = {(it.orientation, it.target): it.column for it in items}
    # orientation A = synth at A: dataset A is synthetic, B real
    assert got == {
        ("A", "A"): "v_synth_A",
        ("A", "B"): "v_real_A",
        ("B", "A"): "v_real_B",
        ("B", "B"): "v_synth_B",
    }
    for it in items:
        user = it.messages[-1]["content"]
        shown, hidden = ("R-vs-S", "S-vs-R") if it.orientation == "A" else ("S-vs-R", "R-vs-S")
        assert shown in user and hidden not in user
        assert f"dataset {it.target}?" in user
    # adjacent prompts share the rubric (and the example for the two questions)
    assert [(it.orientation, it.set, it.target) for it in items[:4]] == [
        ("A", "synthetic", "A"),
        ("A", "synthetic", "B"),
        ("A", "real", "A"),
        ("A", "real", "B"),
    ]


@pytest.mark.parametrize("mode", ["choices", "generate"])
def test_judge_examples_maps_answers_to_sources(mode: str, tmp_path: Path) -> None:
    rubric = Rubric(["alike"], ["S-vs-R point"], ["R-vs-S point"])
    synth = [f"SYN-EXAMPLE {i}" for i in range(3)]
    real = [f"REAL-EXAMPLE {i}" for i in range(2)]
    judg = judge_examples(OracleJudge(), rubric, PROMPTS, synth, real, mode=mode, progress=False)
    assert judg["set"].to_list() == ["synthetic"] * 3 + ["real"] * 2
    assert judg["index"].to_list() == [0, 1, 2, 0, 1]
    s = judg.filter(pl.col("set") == "synthetic")
    r = judg.filter(pl.col("set") == "real")
    assert (s.select("v_synth_A", "v_synth_B").to_numpy() == 4).all()
    assert (s.select("v_real_A", "v_real_B").to_numpy() == 0).all()
    assert (r.select("v_real_A", "v_real_B").to_numpy() == 4).all()
    assert (r.select("v_synth_A", "v_synth_B").to_numpy() == 0).all()
    assert (judg["n_invalid"] == 0).all()
    assert lens_scores(judg)["lens"] == pytest.approx(0.0, abs=1e-5)
    path = tmp_path / "judgments.parquet"
    judg.write_parquet(path)
    assert_frame_equal(pl.read_parquet(path), judg)
    if mode == "choices":
        assert judg["p_synth_A_4"][0] == pytest.approx(0.9)
        probs = judg.select(f"p_real_B_{k}" for k in range(5)).to_numpy()
        assert np.allclose(probs.sum(axis=1), 1.0)
    else:
        assert not any(c in judg.columns for c in PROB_COLUMNS)


def test_judge_generate_counts_invalid_answers() -> None:
    class Babbler(OracleJudge):
        def _complete(self, requests, done) -> None:  # type: ignore[no-untyped-def]
            for j, _ in enumerate(requests):
                done(j, Completion("the weather is nice"))

    llm = Babbler()
    rubric = Rubric(["a"], ["b"], ["c"])
    judg = judge_examples(llm, rubric, PROMPTS, ["x"], ["y"], mode="generate", progress=False)
    assert (judg.select(JUDGMENT_COLUMNS).to_numpy() == 2).all()  # neutral "unsure"
    assert judg["n_invalid"].to_list() == [4, 4]
    assert llm.stats.invalid_answers == 8


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "text, score",
    [
        ("very likely", 4),
        ("Very Likely.", 4),
        ("UNLIKELY!", 1),
        ("**Unsure**", 2),
        ('{"answer": "unlikely"}', 1),
        ('{"answer":"very unlikely"}', 0),
        ("very_likely", 4),
        ("I think it is very unlikely.", 0),
        ("Answer: likely", 3),
        ("  likely\n", 3),
        ('"unsure"', 2),
        ("Likely, because the tone matches.", 3),
    ],
)
def test_parse_likert(text: str, score: int) -> None:
    assert parse_likert(text) == score


@pytest.mark.parametrize("text", ["", "banana", "unlikelyhood", "maybe?", "{}", None, "42"])
def test_parse_likert_nonsense(text: str | None) -> None:
    assert parse_likert(text) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ('["a point", "another point"]', ["a point", "another point"]),
        (
            'Sure! Here you go:\n```json\n["first one", "second one",]\n```\nHope it helps.',
            ["first one", "second one"],
        ),
        ("['single quoted', 'python style']", ["single quoted", "python style"]),
        ('{"points": ["inside an object", "two"]}', ["inside an object", "two"]),
        ("The list: [“smart quotes”, “again here”] done", ["smart quotes", "again here"]),
        (
            '["complete item", "another complete", "cut off by the tok',
            ["complete item", "another complete"],
        ),
        (
            "1. numbered one\n2) numbered two\n3. numbered three",
            ["numbered one", "numbered two", "numbered three"],
        ),
        (
            "Points:\n- **bold** bullet\n* star bullet\n• dot bullet",
            ["bold bullet", "star bullet", "dot bullet"],
        ),
        ('[{"point": "dict item"}, {"point": "another dict"}]', ["dict item", "another dict"]),
        ('["dup", "Dup", "x", "kept"]', ["dup", "kept"]),
        (
            '["1. numbered inside", "2) also numbered", "5% is a number"]',
            ["numbered inside", "also numbered", "5% is a number"],
        ),
    ],
)
def test_parse_string_list_repairs(text: str, expected: list[str]) -> None:
    assert parse_string_list(text) == expected


def test_parse_string_list_lenient_only_on_request() -> None:
    prose = "Both sets talk about stocks. They use short sentences. Numbers appear often."
    assert parse_string_list(prose) is None
    assert parse_string_list(prose, lenient=True) == [
        "Both sets talk about stocks.",
        "They use short sentences.",
        "Numbers appear often.",
    ]
    assert parse_string_list("   ") is None
    assert parse_string_list("", lenient=True) is None


# --------------------------------------------------------------------------- rubric


def test_rubric_json_roundtrip_and_validation() -> None:
    rubric = Rubric(["s1", " s2 "], ["d1"], ["e1"])
    assert rubric.sims == ["s1", "s2"]
    again = Rubric.from_json(rubric.to_json())
    assert again == rubric
    with pytest.raises(RubricError, match="diffs_real_from_synth"):
        Rubric.from_json('{"sims": ["a"], "diffs_synth_from_real": ["b"]}')
    with pytest.raises(RubricError, match=r"sims \(empty\)"):
        Rubric([], ["b"], ["c"])
    with pytest.raises(RubricError, match="not a list"):
        Rubric("oops", ["b"], ["c"])  # type: ignore[arg-type]
    assert rubric.differences("A") == ["e1"] and rubric.differences("B") == ["d1"]


def test_compile_rubric_retries_truncates_and_fails_cleanly() -> None:
    llm = Scripted(
        {
            "sims": ['["alpha 1", "alpha 2", "alpha 3", "alpha 4"]'],
            "s_vs_r": ["I cannot do that.", '```json\n["beta 1", "beta 2"]\n```'],
            "r_vs_s": ["- c1 point\n- c2 point"],
        }
    )
    rubric = compile_rubric(
        llm,
        PROMPTS,
        [f"s{i}" for i in range(30)],
        ["r1", "r2"],
        n_points=3,
        n_samples=5,
        seed=1,
        progress=False,
    )
    assert rubric.sims == ["alpha 1", "alpha 2", "alpha 3"]  # cut to n_points
    assert rubric.diffs_synth_from_real == ["beta 1", "beta 2"]  # short lists are kept
    assert rubric.diffs_real_from_synth == ["c1 point", "c2 point"]
    retry = [m for m in llm.seen if len(m) == 4]
    assert len(retry) == 1 and retry[0][2]["content"] == "I cannot do that."
    assert "JSON array" in retry[0][3]["content"]
    assert llm.stats.invalid_answers == 1
    sample = llm.seen[0][1]["content"]
    assert len(re.findall(r"^\d+\. s\d+$", sample, re.M)) == 5  # n_samples, numbered

    junk = Scripted({"sims": ["[]"] * 3, "s_vs_r": ['["xray one"]'], "r_vs_s": ['["yankee one"]']})
    with pytest.raises(RubricError, match="sims after 3 attempts") as err:
        compile_rubric(junk, PROMPTS, ["s"], ["r"], progress=False)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- released data


def test_released_judgments_loader(data_root: Path) -> None:
    base = data_root / "sentiment_analysis/LENS/scores/qwen2.5-7b-instruct/seed=42"
    name = "llama3.1-8b_few-shot_v1.json"
    synth = json.loads((base / "synthetic_data" / name).read_text())
    real = json.loads((base / "real_data" / name).read_text())
    judg = judgments_from_released(synth, real)
    assert len(judg) == len(synth) + len(real)
    assert (judg["set"] == "synthetic").sum() == len(synth)
    # record 1: real_A "unsure", synth_A "likely", real_B "very likely", synth_B "very likely"
    assert list(judg.select(JUDGMENT_COLUMNS).row(1)) == [2, 3, 4, 4]
    first_real = judg.filter(pl.col("set") == "real").select(JUDGMENT_COLUMNS).row(0)
    assert list(first_real) == [4, 4, 3, 1]
    assert judg["n_invalid"].sum() == 0
    scores = lens_scores(judg)
    assert 0.0 < scores["lens"] < 1.0 and 0.0 < scores["lens_raw"] < 1.0
    rubric_file = next((data_root / "sentiment_analysis/LENS/rubrics").glob("*seed=42.json"))
    rubrics = rubrics_from_released(json.loads(rubric_file.read_text()))
    assert len(rubrics[name[:-5]].sims) == 10


def test_released_loader_rejects_missing_keys() -> None:
    with pytest.raises(SynqueError, match="score_synth_given_synth_loc_A_judgement"):
        judgments_from_released([{"score_real_given_synth_loc_A_judgement": "likely"}], [])


def test_judge_item_column() -> None:
    item = JudgeItem("real", 0, "A", "B", ({"role": "user", "content": "x"},))
    assert item.column == "v_real_A"

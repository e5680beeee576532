"""LENS: an LLM compiles a rubric (how a synthetic set S and a real sample R are alike and
differ), a judge LLM says for every example how likely it comes from each set, and the
judgments are turned into the raw and the debiased LENS score.

Why here and not in the stage: the same scoring serves judgments made now (any backend of
:mod:`synque.llm`) and the paper's released judgments (:func:`judgments_from_released`).

Layout: `prompts` (the prompt wording), `rubric` (rubrics, reading point lists from LLM
replies, compiling), `judge` (judge prompts and the judgments table), `scores` (LENS).

Public API::

    LIKERT, parse_likert(text) -> int | None
    Rubric(sims, diffs_synth_from_real, diffs_real_from_synth) .to_json() .from_json()
    rubrics_from_released(obj) -> dict[str, Rubric]
    Prompts.from_config(cfg) / load_prompts(name)
    parse_string_list(text, lenient=False) -> list[str] | None
    compile_rubric(llm, prompts, synth_texts, real_texts, ...) -> Rubric
    judge_requests(rubric, prompts, synth_texts, real_texts) -> list[JudgeItem]
    judge_examples(llm, rubric, prompts, synth_texts, real_texts, mode=...) -> pl.DataFrame
    judgments_from_released(synth_records, real_records) -> pl.DataFrame
    lens_scores(judgments) -> {"lens", "lens_raw"[, "lens_expected", "lens_raw_expected"]}
"""

from synque.lens.judge import (
    DATASET_SOURCE,
    JUDGE_MODES,
    JUDGMENT_COLUMNS,
    LIKERT,
    NEUTRAL,
    ORIENTATIONS,
    PROB_COLUMNS,
    JudgeItem,
    judge_examples,
    judge_requests,
    judgments_from_released,
    parse_likert,
)
from synque.lens.prompts import Prompts, load_prompts
from synque.lens.rubric import (
    ORIENTATION_DIFFS,
    RUBRIC_FIELDS,
    Rubric,
    RubricError,
    compile_rubric,
    parse_string_list,
    points_schema,
    rubrics_from_released,
)
from synque.lens.scores import EPS, expected_scores, lens_scores

__all__ = [
    "DATASET_SOURCE",
    "EPS",
    "JUDGE_MODES",
    "JUDGMENT_COLUMNS",
    "LIKERT",
    "NEUTRAL",
    "ORIENTATIONS",
    "ORIENTATION_DIFFS",
    "PROB_COLUMNS",
    "RUBRIC_FIELDS",
    "JudgeItem",
    "Prompts",
    "Rubric",
    "RubricError",
    "compile_rubric",
    "expected_scores",
    "judge_examples",
    "judge_requests",
    "judgments_from_released",
    "lens_scores",
    "load_prompts",
    "parse_likert",
    "parse_string_list",
    "points_schema",
    "rubrics_from_released",
]

"""Judging: four Likert judgments per example, from a judge LLM or from released judgments.

The judge sees the rubric with the two sets named "dataset A" and "dataset B" in two
orientations (DESIGN, "LENS, precisely"): orientation A puts the synthetic set at A (the
differences shown are `diffs_real_from_synth`, "how B differs from A"), orientation B puts
it at B. For each example and orientation it is asked how likely the example comes from A
and from B. The answers fill one row per example of the `judgments` table (polars):

    set ("synthetic" | "real"), index, v_real_A, v_synth_A, v_real_B, v_synth_B (0..4),
    n_invalid, and with answer probabilities p_<source>_<orientation>_<k> (k = 0..4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from synque import SynqueError
from synque.lens.prompts import (
    Piece,
    Prompts,
    as_content,
    fill_pieces,
    numbered,
    shown,
)
from synque.lens.rubric import Rubric
from synque.llm import LLM, ChatRequest, Message, match_choice

LIKERT = ("very unlikely", "unlikely", "unsure", "likely", "very likely")
NEUTRAL = LIKERT.index("unsure")
ORIENTATIONS = ("A", "B")
JUDGE_MODES = ("choices", "generate")
#: v_<source>_<orientation>: the answer for "comes from the <source> set" in orientation L.
JUDGMENT_COLUMNS = ("v_real_A", "v_synth_A", "v_real_B", "v_synth_B")
#: p_<source>_<orientation>_<k>: probability of LIKERT[k], when the judge gives them.
PROB_COLUMNS = tuple(f"p{c[1:]}_{k}" for c in JUDGMENT_COLUMNS for k in range(len(LIKERT)))

#: Which set "dataset A"/"dataset B" is, per (orientation, asked-about dataset).
DATASET_SOURCE = {
    ("A", "A"): "synth",
    ("A", "B"): "real",
    ("B", "A"): "real",
    ("B", "B"): "synth",
}

#: The paper's released judgment keys, per judgment column.
RELEASED_KEYS = {
    "v_real_A": "score_real_given_synth_loc_A_judgement",
    "v_synth_A": "score_synth_given_synth_loc_A_judgement",
    "v_real_B": "score_real_given_synth_loc_B_judgement",
    "v_synth_B": "score_synth_given_synth_loc_B_judgement",
}


def parse_likert(text: str | None) -> int | None:
    """Score 0..4 of a Likert answer (case, punctuation, JSON tolerant); None for nonsense."""
    if text is None:
        return None
    return match_choice(str(text), LIKERT)


@dataclass(frozen=True)
class JudgeItem:
    """One judge prompt and where its answer goes."""

    set: str  # "synthetic" | "real"
    index: int
    orientation: str  # "A" (synth at A) | "B" (synth at B)
    target: str  # the dataset the question asks about: "A" | "B"
    messages: tuple[Message, ...]

    @property
    def column(self) -> str:
        """The judgment column this answer fills (`v_real_A` ...)."""
        return f"v_{DATASET_SOURCE[(self.orientation, self.target)]}_{self.orientation}"


def judge_requests(
    rubric: Rubric,
    prompts: Prompts | Mapping[str, Any],
    synth_texts: Sequence[Piece],
    real_texts: Sequence[Piece],
) -> list[JudgeItem]:
    """Every judge prompt, ordered so adjacent prompts share the longest prefix.

    Examples are texts or image parts (:func:`synque.llm.image_part`); an image takes the
    place of `{example}` in the example template, between its text.

    Order: orientation, then example (synthetic first), then the question about A and
    about B. The prompt is system + rubric (the same for a whole orientation) + example
    (shared by its two questions) + question, so prefix caching skips the rubric and a
    backend reusing the previous prompt's KV cache only computes the new tail.
    """
    p = Prompts.from_config(prompts)
    fill = {"data_description": p.data_description, "example_name": p.example_name}
    system = {"role": "system", "content": p.judge_system.format(**fill)}
    items: list[JudgeItem] = []
    for orientation in ORIENTATIONS:
        block = p.judge_rubric.format(
            **fill, sims=numbered(rubric.sims), diffs=numbered(rubric.differences(orientation))
        )
        for set_name, texts in (("synthetic", synth_texts), ("real", real_texts)):
            for index, text in enumerate(texts):
                example = fill_pieces(
                    p.judge_example, fill, example=[shown(text, p.max_example_chars)]
                )
                for target in ORIENTATIONS:
                    question = p.judge_question.format(**fill, target=target)
                    content = as_content([block, "\n\n", *example, "\n\n", question])
                    user = {"role": "user", "content": content}
                    items.append(JudgeItem(set_name, index, orientation, target, (system, user)))
    return items


def judgments_frame(
    n_synth: int,
    n_real: int,
    values: Mapping[str, np.ndarray],
    invalid: np.ndarray,
    probs: Mapping[str, np.ndarray] | None = None,
) -> pl.DataFrame:
    """The judgments table: synthetic rows first, then real rows, each indexed from 0."""
    columns = {
        "set": pl.Series(["synthetic"] * n_synth + ["real"] * n_real, dtype=pl.String),
        "index": np.concatenate([np.arange(n_synth), np.arange(n_real)]).astype(np.int64),
        **{c: np.asarray(values[c], dtype=np.int64) for c in JUDGMENT_COLUMNS},
        "n_invalid": np.asarray(invalid, dtype=np.int64),
    }
    if probs is not None:
        columns.update({c: np.asarray(probs[c], dtype=np.float64) for c in PROB_COLUMNS})
    return pl.DataFrame(columns)


def judge_examples(
    llm: LLM,
    rubric: Rubric,
    prompts: Prompts | Mapping[str, Any],
    synth_texts: Sequence[Piece],
    real_texts: Sequence[Piece],
    *,
    mode: str = "choices",
    max_tokens: int = 16,
    progress: bool = True,
) -> pl.DataFrame:
    """Four Likert judgments for every synthetic and every real example (a polars table).

    `mode="choices"`: `llm.score_choices_batch` gives a probability for each answer; `v_*`
    is the most probable answer and the `p_*_<k>` columns hold the probabilities.
    `mode="generate"`: free (or server-constrained) generation parsed with
    :func:`parse_likert`; an unreadable answer counts as invalid (`llm.stats` and the row's
    `n_invalid`) and is scored 2 ("unsure", the neutral answer).
    """
    if mode not in JUDGE_MODES:
        raise SynqueError(f"judge mode must be 'choices' or 'generate', got {mode!r}")
    items = judge_requests(rubric, prompts, synth_texts, real_texts)
    n_synth, n_rows = len(synth_texts), len(synth_texts) + len(real_texts)
    rows = [it.index + (0 if it.set == "synthetic" else n_synth) for it in items]
    values = {c: np.full(n_rows, NEUTRAL, dtype=np.int64) for c in JUDGMENT_COLUMNS}
    invalid = np.zeros(n_rows, dtype=np.int64)
    if mode == "choices":
        scored = llm.score_choices_batch(
            [list(it.messages) for it in items], LIKERT, progress=progress
        )
        probs = {c: np.zeros(n_rows) for c in PROB_COLUMNS}
        for item, row, pr in zip(items, rows, scored, strict=True):
            values[item.column][row] = int(np.argmax(pr))
            for k, value in enumerate(pr):
                probs[f"p{item.column[1:]}_{k}"][row] = float(value)
        return judgments_frame(n_synth, len(real_texts), values, invalid, probs)
    requests = [
        ChatRequest(list(it.messages), temperature=0.0, max_tokens=max_tokens, choices=list(LIKERT))
        for it in items
    ]
    for item, row, reply in zip(
        items, rows, llm.complete(requests, progress=progress), strict=True
    ):
        score = parse_likert(reply.text)
        if score is None:
            invalid[row] += 1
            score = NEUTRAL
        values[item.column][row] = score
    if invalid.sum():
        llm.record_invalid(int(invalid.sum()))
    return judgments_frame(n_synth, len(real_texts), values, invalid)


def judgments_from_released(
    synth_records: Sequence[Mapping[str, Any]], real_records: Sequence[Mapping[str, Any]]
) -> pl.DataFrame:
    """The paper's per-example judgment dicts (Likert strings) -> the judgments table."""
    records = [*synth_records, *real_records]
    values = {c: np.full(len(records), NEUTRAL, dtype=np.int64) for c in JUDGMENT_COLUMNS}
    invalid = np.zeros(len(records), dtype=np.int64)
    for col, key in RELEASED_KEYS.items():
        for row, rec in enumerate(records):
            if key not in rec:
                raise SynqueError(f"released judgment #{row} has no key {key}")
            score = parse_likert(rec[key])
            if score is None:
                invalid[row] += 1
            else:
                values[col][row] = score
    return judgments_frame(len(synth_records), len(real_records), values, invalid)

"""Batched judging and batched generation give the same answers as one prompt at a time.

Why: the local backend scores many judge prompts in one forward pass (a token trie with a
tree attention mask) and generates rubric replies in left-padded batches for speed; a LENS
value must not depend on how the prompts were grouped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from synque.lens import LIKERT, Rubric, compile_rubric, judge_examples, load_prompts
from synque.lens.judge import JUDGMENT_COLUMNS, PROB_COLUMNS
from synque.lens.rubric import compile_rubrics
from synque.llm import ChatRequest, Completion, LocalLLM, ResponseCache
from synque.llm.base import OnComplete
from synque.llm.local_tree import Trie
from tests.conftest import needs_smollm2
from tests.fakes.judges import Counting, user

SYNTH = [
    "Tech giant beats quarterly estimates as cloud revenue climbs 18%",
    "Oil slides 3% as traders weigh weaker demand outlook",
    "Retailer cuts full-year forecast citing cautious shoppers",
]
REAL = [
    "$XYZ -4% premarket after downgrade to neutral at a large bank",
    "Futures flat ahead of payrolls; yields edge up",
    "Gold hits two-week high as dollar eases",
]
RUBRIC = Rubric(
    sims=[f"Both name a company or a market and a figure ({i})." for i in range(3)],
    diffs_synth_from_real=[f"Written as full sentences in a formal tone ({i})." for i in range(3)],
    diffs_real_from_synth=[f"Use tickers, abbreviations and symbols ({i})." for i in range(3)],
)


PROMPTS = load_prompts("sentiment")


def test_trie_shares_common_prefixes_and_counts_depth() -> None:
    trie = Trie()
    first = trie.add([1, 2, 3, 4])
    second = trie.add([1, 2, 5])
    choice = trie.add([7, 8], parent=second[-1])
    assert first == [0, 1, 2, 3]
    assert second[:2] == first[:2] and second[2] == 4  # only the new token is a new node
    assert trie.fresh == [4, 1, 2]
    assert trie.parents == [-1, 0, 1, 2, 1, 4, 5]
    assert [trie.depths[n] for n in choice] == [3, 4]  # positions continue after the prompt
    assert trie.add([1, 2, 3, 4]) == first and trie.fresh[-1] == 0


class Points(Counting):
    """Replies with a JSON list of points (unreadable prose to a first `bad` ask), counting."""

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        for j, req in enumerate(requests):
            self.made += 1
            asked = str(req.messages[-1]["content"])
            if "set R differ" in asked and len(req.messages) == 2:  # first ask: no retry yet
                done(j, Completion("I think they differ in tone."))
            else:
                done(j, Completion(f'["point {len(asked)} {len(req.messages)}", "another"]'))


def test_rubrics_compiled_together_equal_one_at_a_time(tmp_path: Path) -> None:
    options = {"n_points": 2, "n_samples": 2, "seed": 3, "max_tokens": 40, "max_attempts": 2}
    sets = [(SYNTH, REAL), (REAL, SYNTH), (SYNTH[:2], REAL[1:])]
    together = Points(ResponseCache(tmp_path / "together.sqlite"))
    batched = compile_rubrics(together, PROMPTS, sets, **options, progress=False)
    alone = Points(ResponseCache(tmp_path / "alone.sqlite"))
    single = [compile_rubric(alone, PROMPTS, s, r, **options, progress=False) for s, r in sets]
    assert batched == single
    assert together.made == alone.made == 3 * 4  # three lists and one retry per set
    assert batched[0].diffs_real_from_synth[0].endswith(" 4")  # read from the retry
    assert batched[0] != batched[1]
    together.close()
    alone.close()


@pytest.fixture(scope="module")
def smol() -> Iterator[LocalLLM]:
    llm = LocalLLM("smollm2", cache=None, threads=1)
    yield llm
    llm.close()


def _judge(llm: LocalLLM, budget: int) -> tuple[object, int]:
    llm.score_batch_tokens = budget
    before = llm.reused_tokens
    frame = judge_examples(llm, RUBRIC, PROMPTS, SYNTH, REAL, progress=False)
    return frame, llm.reused_tokens - before


@pytest.mark.slow
@needs_smollm2
def test_batched_judging_equals_sequential(smol: LocalLLM) -> None:
    sequential, _ = _judge(smol, 0)
    for budget in (300, 100_000):  # several chunks (one crosses the orientations); one
        batched, reused = _judge(smol, budget)
        assert smol.score_batch_tokens == budget  # the batched path ran (no fallback)
        assert reused > 0
        for col in PROB_COLUMNS:
            np.testing.assert_allclose(
                batched[col].to_numpy(), sequential[col].to_numpy(), atol=1e-4
            )
        for col in JUDGMENT_COLUMNS:
            assert batched[col].to_list() == sequential[col].to_list()
    probs = sequential.select(PROB_COLUMNS).to_numpy().reshape(-1, len(LIKERT))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
@needs_smollm2
def test_batched_greedy_generation_equals_one_at_a_time(smol: LocalLLM) -> None:
    requests = [
        ChatRequest(user(text), temperature=0.0, max_tokens=12)
        for text in ("Name a fruit.", "Write one word about the sea, then a longer sentence.", "Hi")
    ]
    smol.gen_batch_size = len(requests)
    batched = [c.text for c in smol.complete(requests, progress=False)]
    smol.gen_batch_size = 1
    try:
        single = [c.text for c in smol.complete(requests, progress=False)]
    finally:
        smol.gen_batch_size = 8
    assert single == batched
    assert all(text.strip() for text in single)

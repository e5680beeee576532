"""The local transformers backend with SmolLM2-135M: exact choice probabilities, prefix
KV reuse equal to a full recompute, batched generation and constrained choice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synque.lens import LIKERT
from synque.llm import ChatRequest, LocalLLM, Message
from tests.conftest import needs_smollm2
from tests.fakes.judges import user

# Loading SmolLM2 (transformers + dequantising the GGUF) takes ~30 s on a shared CPU.
pytestmark = [pytest.mark.slow, needs_smollm2]

# --------------------------------------------------------------------------- local


@pytest.fixture(scope="module")
def smol() -> Iterator[LocalLLM]:
    llm = LocalLLM("smollm2", cache=None)
    yield llm
    llm.close()


RUBRIC = " ".join(
    f"Point {i}: headlines often name a company, a ticker and a move." for i in range(12)
)


def judge_prompt(example: str, target: str) -> list[Message]:
    return [
        {"role": "system", "content": "You judge which dataset an example is from."},
        {
            "role": "user",
            "content": f"Notes: {RUBRIC}\n\nExample: {example}\n\n"
            f"How likely is it that it comes from dataset {target}? Answer with one of: "
            "very unlikely, unlikely, unsure, likely, very likely.",
        },
    ]


def test_local_score_choices_probabilities_deterministic(smol: LocalLLM) -> None:
    prompt = judge_prompt("$AAPL up 3% after earnings beat", "A")
    first = smol.score_choices(prompt, LIKERT)
    assert len(first) == 5 and sum(first) == pytest.approx(1.0, abs=1e-6)
    assert all(p > 0 for p in first)
    assert smol.score_choices(prompt, LIKERT) == first


def test_local_prefix_reuse_matches_full_recompute(smol: LocalLLM) -> None:
    prompts = [
        judge_prompt("$AAPL up 3% after earnings beat", "A"),
        judge_prompt("$AAPL up 3% after earnings beat", "B"),
        judge_prompt("Oil slides as OPEC output rises", "A"),
    ]
    smol.prefix_reuse, before = True, smol.reused_tokens
    reused = smol.score_choices_batch(prompts, LIKERT, progress=False)
    assert smol.reused_tokens - before > 2 * 100  # the shared rubric was not recomputed
    smol.prefix_reuse = False
    try:
        fresh = smol.score_choices_batch(prompts, LIKERT, progress=False)
    finally:
        smol.prefix_reuse = True
    for a, b in zip(reused, fresh, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    smol._packed = False  # one batched forward per prompt instead of the packed tree mask
    try:
        batched = smol.score_choices_batch(prompts[:2], LIKERT, progress=False)
    finally:
        smol._packed = True
    for a, b in zip(reused, batched, strict=False):
        assert a == pytest.approx(b, abs=1e-4)


def test_local_generate_and_constrained_choice(smol: LocalLLM) -> None:
    out = smol.complete(
        [
            ChatRequest(user("Name a color."), max_tokens=6),
            ChatRequest(judge_prompt("Gold rallies", "B"), choices=list(LIKERT)),
        ],
        progress=False,
    )
    assert out[0].text.strip() and 0 < out[0].completion_tokens <= 6
    assert out[1].text in LIKERT

"""In-memory LLM backends with known behaviour, for the cache, rubric and judging tests.

`user(text)` is a one-message conversation; `Counting` echoes and counts the calls it
really makes (cache hits cost none); `OracleJudge` reads a judge prompt like a perfect judge
would; `Scripted` replays a script of rubric replies per list and remembers every
conversation it was sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from synque.lens import LIKERT
from synque.llm import LLM, ChatRequest, Completion, Message, ResponseCache
from synque.llm.base import OnComplete, OnScore


def user(text: str) -> list[Message]:
    """A one-message conversation: the user says `text`."""
    return [{"role": "user", "content": text}]


class Counting(LLM):
    """Deterministic in-memory backend that counts the calls it really makes."""

    kind = "counting"

    def __init__(self, cache: ResponseCache | None, model: str = "m") -> None:
        super().__init__(model, cache)
        self.made = 0

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        for j, req in enumerate(requests):
            self.made += 1
            done(j, Completion(f"echo {req.messages[-1]['content']} t={req.temperature}", 3, 2))

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        for j, _ in enumerate(items):
            self.made += 1
            done(j, [1 / len(choices)] * len(choices))


class OracleJudge(LLM):
    """Knows each example's true source and reads the prompt like a perfect judge would.

    It finds which dataset is synthetic from the differences shown ("how B differs from
    A": the real-vs-synthetic list, marked "R-vs-S", means B is real, so A is synthetic)
    and answers "very likely" exactly when the asked-about dataset is the example's true
    source (synthetic examples contain "SYN-EXAMPLE").
    """

    kind = "oracle"

    def __init__(self) -> None:
        super().__init__("oracle")

    def _answer(self, messages: Sequence[Message]) -> int:
        user = messages[-1]["content"]
        synth_at = "A" if "R-vs-S" in user else "B"
        target = re.search(r"dataset ([AB])\?", user).group(1)  # type: ignore[union-attr]
        source_is_synth = "SYN-EXAMPLE" in user
        return 4 if (target == synth_at) == source_is_synth else 0

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        for j, req in enumerate(requests):
            done(j, Completion(f"**{LIKERT[self._answer(req.messages)].title()}**"))

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        for j, messages in enumerate(items):
            probs = [0.025] * 5
            probs[self._answer(messages)] = 0.9
            done(j, probs)


class Scripted(LLM):
    """Replies from a script per rubric list, recognised by words of the question.

    Script keys: `sims` ("in common"), `s_vs_r` ("set S differ"), `r_vs_s` (the rest).
    """

    kind = "scripted"

    def __init__(self, script: dict[str, list[str]]) -> None:
        super().__init__("scripted")
        self.script = script
        self.seen: list[list[Message]] = []

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        for j, req in enumerate(requests):
            self.seen.append(req.messages)
            first_user = req.messages[1]["content"]
            key = (
                "sims"
                if "in common" in first_user
                else "s_vs_r"
                if "set S differ" in first_user
                else "r_vs_s"
            )
            done(j, Completion(self.script[key].pop(0)))

"""Reading an answer choice (a Likert phrase, say) from what a model said.

Why tolerant: small and chatty models wrap answers in JSON, quotes, markdown or a sentence,
and servers differ in how they constrain a reply; the judge must still read `{"answer":
"likely"}`, `**Likely.**` or `Answer: very likely`, and turn a server's per-token log-probs
into a probability for each choice.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np


def _norm_answer(text: str) -> str:
    """Lower-case, collapse whitespace, drop markdown/quote noise around an answer."""
    text = text.strip().lower().replace("_", " ")
    text = re.sub(r"[*`\"'“”‘’]", "", text)
    return re.sub(r"\s+", " ", text).strip(" .!,;:")


def match_choice(text: str, choices: Sequence[str]) -> int | None:
    """Index of the choice that `text` answers, or None when it names none.

    The earliest whole-word mention wins; at one position the longest choice wins (so
    `very unlikely` beats `unlikely`). A JSON object answers with its first string value.
    """
    if not text:
        return None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for value in obj.values():
                if isinstance(value, str):
                    return match_choice(value, choices)
    norm = _norm_answer(text)
    normed = [_norm_answer(c) for c in choices]
    if norm in normed:
        return normed.index(norm)
    best: tuple[int, int, int] | None = None  # (position, -length, index)
    for i, c in enumerate(normed):
        m = re.search(r"(?<![a-z])" + re.escape(c) + r"(?![a-z])", norm)
        if m and (best is None or (m.start(), -len(c)) < best[:2]):
            best = (m.start(), -len(c), i)
    return best[2] if best else None


_WRAPPER = re.compile(r"""^\s*(?:\{\s*"[A-Za-z_]*"\s*:\s*)?["'*\s]*""")


def _strip_wrapper(text: str) -> str:
    """Drop a leading `{"answer": "` / quote / markdown wrapper from a partial answer."""
    return _WRAPPER.sub("", text, count=1).lower()


def choice_probs_from_logprobs(
    tokens: Sequence[tuple[str, float, Sequence[tuple[str, float]]]], choices: Sequence[str]
) -> list[float] | None:
    """Probability of each choice from a greedy reply's per-token `top_logprobs`.

    Why an approximation: a chat API only shows alternatives along the path it generated.
    The walk starts where the reply's answer starts (after a JSON/quote wrapper such as
    `{"answer": "`, whose tokens a grammar may force and whose raw probability is then
    meaningless); from there, every alternative token that leads towards exactly one choice
    gets `P(path since the answer start) * P(alternative)` (assuming the rest of that
    choice then follows), an alternative compatible with several choices splits its mass
    evenly, and the generated path gets its own probability once it completes a choice.
    The masses are normalised; None when the reply never starts a choice.
    """
    normed = [c.lower() for c in choices]

    def status(s: str) -> tuple[list[int], list[int]]:
        """(choices that `s` completes, choices that `s` is a proper prefix of)."""
        done = [
            i
            for i, c in enumerate(normed)
            if s == c or (s.startswith(c) and not s[len(c)].isalpha())
        ]
        partial = [i for i, c in enumerate(normed) if c.startswith(s) and len(s) < len(c)]
        return done, partial

    before, text = [], ""
    for token, _, _ in tokens:
        before.append(text)
        text += token
    start = None
    for i, (token, _, _) in enumerate(tokens):
        head = _strip_wrapper(before[i] + token)
        if _strip_wrapper(before[i]) == "" and head and any(status(head)):
            start = i
            break
    if start is None:
        return None
    mass = [0.0] * len(choices)
    path_lp = 0.0
    for i in range(start, len(tokens)):
        token, lp, alts = tokens[i]
        here = _strip_wrapper(before[i])
        for alt, alt_lp in alts:
            cand = _strip_wrapper(before[i] + alt)
            if alt == token or not cand or cand == here:
                continue
            done, partial = status(cand)
            targets = done[:1] if done else partial
            for t in targets:
                mass[t] += math.exp(path_lp + alt_lp) / len(targets)
        path_lp += lp
        done, partial = status(_strip_wrapper(before[i] + token))
        if done:
            # the longest completed choice, in case one choice is a prefix of another
            mass[max(done, key=lambda k: len(normed[k]))] += math.exp(path_lp)
            break
        if not partial:
            break
    total = sum(mass)
    return [m / total for m in mass] if total > 0 else None


def choice_schema(choices: Sequence[str]) -> dict[str, Any]:
    """JSON schema `{"answer": <one of choices>}` for servers without choice decoding."""
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(choices)}},
        "required": ["answer"],
        "additionalProperties": False,
    }


def softmax_probs(log_likelihoods: Sequence[float]) -> list[float]:
    """Probability of each choice from its summed token log-likelihood (exact backends)."""
    from scipy.special import softmax

    return [float(p) for p in softmax(np.asarray(log_likelihoods, dtype=np.float64))]


def one_hot(index: int | None, n: int) -> list[float]:
    """The probabilities of a single read answer; uniform when no choice was read."""
    if index is None:
        return [1.0 / n] * n
    return [1.0 if j == index else 0.0 for j in range(n)]

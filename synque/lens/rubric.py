"""Rubrics: how a synthetic set S and the real sample R are alike and how they differ.

An LLM writes three point lists from samples of both sets (:func:`compile_rubric`); its
replies are read with :func:`parse_string_list`, which repairs the usual breakage of LLM
"JSON" (fences, smart quotes, trailing commas, cut-off arrays, bullets) so that a small
local model still yields a usable rubric.
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synque import SynqueError
from synque.lens.prompts import Piece, Prompts, as_content, fill_pieces, numbered_pieces, shown
from synque.llm import LLM, ChatRequest, Message

RUBRIC_FIELDS = ("sims", "diffs_synth_from_real", "diffs_real_from_synth")
#: The differences the judge sees per orientation always read "how dataset B differs from A".
ORIENTATION_DIFFS = {"A": "diffs_real_from_synth", "B": "diffs_synth_from_real"}


class RubricError(SynqueError):
    """A rubric is missing parts or could not be read from the LLM's replies."""


@dataclass
class Rubric:
    """The three point lists comparing a synthetic set with the real sample."""

    sims: list[str]
    diffs_synth_from_real: list[str]
    diffs_real_from_synth: list[str]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise naming every missing or empty list (why: a silent empty list skews LENS)."""
        bad = []
        for name in RUBRIC_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                bad.append(f"{name} (not a list)")
            elif not [p for p in value if isinstance(p, str) and p.strip()]:
                bad.append(f"{name} (empty)")
        if bad:
            raise RubricError("rubric is missing " + ", ".join(bad))
        for name in RUBRIC_FIELDS:
            setattr(self, name, [str(p).strip() for p in getattr(self, name) if str(p).strip()])

    def differences(self, orientation: str) -> list[str]:
        """The difference list the judge sees in an orientation ("how B differs from A")."""
        return getattr(self, ORIENTATION_DIFFS[orientation])

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of the three lists (the `rubric.json` artifact)."""
        return json.dumps(asdict(self), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes | Path | Mapping[str, Any]) -> Rubric:
        """Rubric from JSON text, a path to a JSON file or a mapping."""
        if isinstance(data, Path):
            data = data.read_text(encoding="utf-8")
        obj = json.loads(data) if isinstance(data, str | bytes) else dict(data)
        if not isinstance(obj, Mapping):
            raise RubricError("rubric JSON must be an object")
        missing = [k for k in RUBRIC_FIELDS if k not in obj]
        if missing:
            raise RubricError("rubric is missing " + ", ".join(missing))
        return cls(*(list(obj[k]) for k in RUBRIC_FIELDS))


def rubrics_from_released(obj: Mapping[str, Any]) -> dict[str, Rubric]:
    """The paper's rubric file `{field: {dataset: [points]}}` -> `{dataset: Rubric}`."""
    missing = [k for k in RUBRIC_FIELDS if k not in obj]
    if missing:
        raise RubricError("released rubric file is missing " + ", ".join(missing))
    names = sorted(set.intersection(*(set(obj[k]) for k in RUBRIC_FIELDS)))
    return {n: Rubric(*(list(obj[k][n]) for k in RUBRIC_FIELDS)) for n in names}


# --------------------------------------------------------------------------- list parsing


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)(?:```|$)", re.S)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\(?\d{1,3}[.):]|\(?[a-zA-Z][.)])\s+(.*\S)\s*$")
_ENUMERATION = re.compile(r"^(?:\(?\d{1,3}[.):]|[-*•])\s+")
_STRING_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def _strings_from(obj: Any) -> list[str] | None:
    """Strings of a parsed JSON value: a list, or the first list inside an object."""
    if isinstance(obj, Mapping):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if lists:
            return _strings_from(lists[0])
        values = [v for v in obj.values() if isinstance(v, str)]
        return values if len(values) > 1 else None
    if not isinstance(obj, list):
        return None
    out = []
    for item in obj:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(" ".join(str(v) for v in item.values() if isinstance(v, str | int)))
        elif item is not None:
            out.append(str(item))
    return out


def _repair(text: str) -> str:
    """Fix the usual JSON breakage: smart quotes, trailing commas, comments."""
    text = text.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    return re.sub(r",\s*([\]}])", r"\1", text)


def _load_any(text: str) -> Any:
    """JSON, else a Python literal (single quotes), each also after `_repair`; else None."""
    for attempt in (text, _repair(text)):
        try:
            return json.loads(attempt)
        except ValueError:
            pass
        try:
            return ast.literal_eval(attempt)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def _clean(items: Sequence[str]) -> list[str]:
    """Trim, unquote, drop markdown emphasis, empties, tiny items and duplicates."""
    out, seen = [], set()
    for item in items:
        s = re.sub(r"\*\*|__", "", str(item)).strip().strip(",").strip().strip("\"'").strip()
        s = _ENUMERATION.sub("", s)
        key = s.lower()
        if len(s) >= 3 and key not in seen:
            seen.add(key)
            out.append(s)
    return out


def parse_string_list(text: str, lenient: bool = False) -> list[str] | None:
    """A list of strings from an LLM reply, or None.

    Order of attempts: JSON inside a code fence or the whole reply or the outermost
    `[...]`/`{...}` (with repairs: smart quotes, trailing commas, Python-style single
    quotes); complete string literals of a JSON array cut off by the token limit; bulleted
    or numbered lines. With `lenient` (the last attempt), any remaining non-empty lines,
    or the sentences of a single paragraph, are accepted too.
    """
    if not text or not text.strip():
        return None
    candidates = [*(m.group(1) for m in _FENCE.finditer(text)), text.strip()]
    for source in list(candidates):
        for open_, close in (("[", "]"), ("{", "}")):
            start, end = source.find(open_), source.rfind(close)
            if 0 <= start < end:
                candidates.append(source[start : end + 1])
    for cand in candidates:
        items = _strings_from(_load_any(cand.strip()))
        cleaned = _clean(items) if items is not None else []
        if cleaned:
            return cleaned
    start = text.find("[")
    if start >= 0:
        literals = []
        for m in _STRING_LITERAL.finditer(text[start:]):
            try:
                literals.append(json.loads(f'"{m.group(1)}"'))
            except ValueError:
                continue
        cleaned = _clean(literals)
        if cleaned:
            return cleaned
    lines = text.splitlines()
    bullets = _clean([m.group(1) for m in map(_BULLET.match, lines) if m])
    if bullets:
        return bullets
    if not lenient:
        return None
    body = [ln.strip() for ln in lines if ln.strip() and not ln.strip().endswith(":")]
    body = [ln for ln in body if not ln.startswith(("```", "[", "]", "{", "}"))]
    if len(body) == 1:
        body = re.split(r"(?<=[.!?])\s+", body[0])
    return _clean(body) or None


# --------------------------------------------------------------------------- compile


def points_schema(n_points: int) -> dict[str, Any]:
    """JSON schema of a rubric reply: `{"points": [1..n_points non-trivial strings]}`."""
    return {
        "type": "object",
        "properties": {
            "points": {
                "type": "array",
                "items": {"type": "string", "minLength": 3},
                "minItems": 1,
                "maxItems": n_points,
            }
        },
        "required": ["points"],
    }


def _sample(texts: Sequence[Piece], n: int, rng: random.Random) -> list[Piece]:
    texts = list(texts)
    return texts if n <= 0 or len(texts) <= n else rng.sample(texts, n)


def _rubric_chats(
    p: Prompts,
    synth_texts: Sequence[Piece],
    real_texts: Sequence[Piece],
    n_points: int,
    n_samples: int,
    seed: int,
) -> tuple[dict[str, list[Message]], dict[str, Any]]:
    """The three first-attempt conversations (sims, both diffs) and the template fill."""
    if not synth_texts or not real_texts:
        raise RubricError("compile_rubric needs at least one synthetic and one real example")
    rng = random.Random(seed)
    synth = [shown(t, p.max_example_chars) for t in _sample(synth_texts, n_samples, rng)]
    real = [shown(t, p.max_example_chars) for t in _sample(real_texts, n_samples, rng)]
    fill = {
        "data_description": p.data_description,
        "example_name": p.example_name,
        "n_points": n_points,
        "n_synth": len(synth),
        "n_real": len(real),
    }
    intro = fill_pieces(
        p.rubric_intro,
        fill,
        synth_examples=numbered_pieces(synth),
        real_examples=numbered_pieces(real),
    )
    asks = {
        "sims": p.rubric_sims,
        "diffs_synth_from_real": p.rubric_diffs_synth_from_real,
        "diffs_real_from_synth": p.rubric_diffs_real_from_synth,
    }
    chats = {
        name: [
            {"role": "system", "content": p.rubric_system.format(**fill)},
            {"role": "user", "content": as_content([*intro, "\n\n", ask.format(**fill)])},
        ]
        for name, ask in asks.items()
    }
    return chats, fill


def _rubric_request(
    messages: list[Message], n_points: int, seed: int, max_tokens: int, temperature: float
) -> ChatRequest:
    return ChatRequest(
        messages,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        json_schema=points_schema(n_points),
    )


def compile_rubric(
    llm: LLM,
    prompts: Prompts | Mapping[str, Any],
    synth_texts: Sequence[Piece],
    real_texts: Sequence[Piece],
    *,
    n_points: int = 10,
    n_samples: int = 50,
    seed: int = 0,
    max_attempts: int = 3,
    max_tokens: int = 1024,
    temperature: float = 0.0,
    progress: bool = True,
) -> Rubric:
    """Ask `llm` for the three point lists comparing S (synthetic) with R (real).

    `n_samples` examples of each set are drawn with `random.Random(seed)` (all when fewer);
    examples are texts or image parts (an image is shown after its number in the list);
    the three questions share one intro with the samples (prefix caching) and are sent as
    one batch. A reply that does not parse is answered with the retry reminder, up to
    `max_attempts` replies in all (the last one parsed leniently). Lists longer than
    `n_points` are cut; shorter lists are kept (never padded: invented filler points would
    only add noise to the judge's prompt). Unreadable replies count as invalid answers.
    """
    options = {"n_points": n_points, "n_samples": n_samples, "seed": seed}
    return compile_rubrics(
        llm,
        prompts,
        [(synth_texts, real_texts)],
        **options,
        max_attempts=max_attempts,
        max_tokens=max_tokens,
        temperature=temperature,
        progress=progress,
    )[0]


def compile_rubrics(
    llm: LLM,
    prompts: Prompts | Mapping[str, Any],
    sets: Sequence[tuple[Sequence[Piece], Sequence[Piece]]],
    *,
    n_points: int = 10,
    n_samples: int = 50,
    seed: int = 0,
    max_attempts: int = 3,
    max_tokens: int = 1024,
    temperature: float = 0.0,
    progress: bool = True,
) -> list[Rubric]:
    """`compile_rubric` for several (synthetic, real) sets, each attempt one batch for all.

    Why: a local model generates a batch of replies in about the time of one (a decoding
    step reads every weight once), so the rubrics of many candidate sets, their retries
    included, cost about as much as one. Each set's conversations are exactly those
    `compile_rubric` holds for it alone. Raises a `RubricError` naming the first set (in
    order) whose lists stayed unreadable.
    """
    p = Prompts.from_config(prompts)
    pending: dict[tuple[int, str], list[Message]] = {}
    fills = []
    for k, (synth, real) in enumerate(sets):
        chats, fill = _rubric_chats(p, synth, real, n_points, n_samples, seed)
        fills.append(fill)
        pending.update({(k, name): chat for name, chat in chats.items()})
    found: dict[tuple[int, str], list[str]] = {}
    last: dict[tuple[int, str], str] = {}
    for attempt in range(1, max_attempts + 1):
        keys = list(pending)
        requests = [
            _rubric_request(pending[key], n_points, seed, max_tokens, temperature) for key in keys
        ]
        for key, reply in zip(keys, llm.complete(requests, progress=progress), strict=True):
            points = parse_string_list(reply.text, lenient=attempt == max_attempts)
            if points:
                found[key] = points[:n_points]
                del pending[key]
                continue
            llm.record_invalid()
            last[key] = reply.text
            pending[key] = [
                *pending[key],
                {"role": "assistant", "content": reply.text[:1000]},
                {"role": "user", "content": p.rubric_retry.format(**fills[key[0]])},
            ]
        if not pending:
            break
    if pending:
        first = min(k for k, _ in pending)
        names = sorted(name for k, name in pending if k == first)
        raise RubricError(
            f"could not read a list of points for {', '.join(names)} after "
            f"{max_attempts} attempts; last reply for {names[0]}: "
            f"{last[(first, names[0])][:100]!r}"
        )
    return [
        Rubric(**{name: pts for (k, name), pts in found.items() if k == i})
        for i in range(len(sets))
    ]

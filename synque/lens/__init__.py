"""LENS: an LLM compiles a rubric (how a synthetic set S and a real sample R are alike and
differ), a judge LLM says for every example how likely it comes from each set, and the
judgments are turned into the raw and the debiased LENS score.

Why here and not in the stage: the same scoring serves judgments made now (any backend of
:mod:`synque.llm`) and the paper's released judgments (:func:`judgments_from_released`).

Public API::

    LIKERT, parse_likert(text) -> int | None
    Rubric(sims, diffs_synth_from_real, diffs_real_from_synth) .to_json() .from_json()
    rubrics_from_released(obj) -> dict[str, Rubric]
    Prompts.from_config(cfg) / load_prompts(name)
    parse_string_list(text, lenient=False) -> list[str] | None
    compile_rubric(llm, prompts, synth_texts, real_texts, ...) -> Rubric
    judge_requests(rubric, prompts, synth_texts, real_texts) -> list[JudgeItem]
    judge_examples(llm, rubric, prompts, synth_texts, real_texts, mode=...) -> DataFrame
    judgments_from_released(synth_records, real_records) -> DataFrame
    lens_scores(judgments) -> {"lens", "lens_raw"[, "lens_expected", "lens_raw_expected"]}
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

import numpy as np
import pandas as pd

from synque import SynqueError
from synque.config import project_root
from synque.llm import LLM, ChatRequest, Message, match_choice

LIKERT = ("very unlikely", "unlikely", "unsure", "likely", "very likely")
EPS = 1e-6
ORIENTATIONS = ("A", "B")
#: v_<source>_<orientation>: the answer for "comes from the <source> set" in orientation L.
JUDGMENT_COLUMNS = ("v_real_A", "v_synth_A", "v_real_B", "v_synth_B")
#: p_<source>_<orientation>_<k>: probability of LIKERT[k], when the judge gives them.
PROB_COLUMNS = tuple(f"p{c[1:]}_{k}" for c in JUDGMENT_COLUMNS for k in range(len(LIKERT)))
RUBRIC_FIELDS = ("sims", "diffs_synth_from_real", "diffs_real_from_synth")
NEUTRAL = LIKERT.index("unsure")

# Which set "dataset A"/"dataset B" is in each orientation. Orientation "A" = synth at A.
DATASET_SOURCE = {
    ("A", "A"): "synth",
    ("A", "B"): "real",
    ("B", "A"): "real",
    ("B", "B"): "synth",
}
# The differences shown always read "how dataset B differs from dataset A".
ORIENTATION_DIFFS = {"A": "diffs_real_from_synth", "B": "diffs_synth_from_real"}

_RELEASED_KEYS = {
    "v_real_A": "score_real_given_synth_loc_A_judgement",
    "v_synth_A": "score_synth_given_synth_loc_A_judgement",
    "v_real_B": "score_real_given_synth_loc_B_judgement",
    "v_synth_B": "score_synth_given_synth_loc_B_judgement",
}


class RubricError(SynqueError):
    """A rubric is missing parts or could not be read from the LLM's replies."""


# --------------------------------------------------------------------------- answers


def parse_likert(text: str | None) -> int | None:
    """Score 0..4 of a Likert answer (case, punctuation, JSON tolerant); None for nonsense."""
    if text is None:
        return None
    return match_choice(str(text), LIKERT)


# --------------------------------------------------------------------------- rubric


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
        """JSON text of the three lists (the ``rubric.json`` artifact)."""
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
    """The paper's rubric file ``{field: {dataset: [points]}}`` -> ``{dataset: Rubric}``."""
    missing = [k for k in RUBRIC_FIELDS if k not in obj]
    if missing:
        raise RubricError("released rubric file is missing " + ", ".join(missing))
    names = sorted(set.intersection(*(set(obj[k]) for k in RUBRIC_FIELDS)))
    return {n: Rubric(*(list(obj[k][n]) for k in RUBRIC_FIELDS)) for n in names}


# --------------------------------------------------------------------------- prompts


@dataclass
class Prompts:
    """The wording of every LENS prompt (the ``prompts`` config group).

    Placeholders in braces are filled here; literal braces are written ``{{ }}``.
    """

    data_description: str
    example_name: str
    max_example_chars: int
    rubric_system: str
    rubric_intro: str
    rubric_sims: str
    rubric_diffs_synth_from_real: str
    rubric_diffs_real_from_synth: str
    rubric_retry: str
    judge_system: str
    judge_rubric: str
    judge_example: str
    judge_question: str
    name: str = "custom"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Prompts) -> Prompts:
        """Build from a (Hydra) mapping; raises naming every missing key."""
        if isinstance(cfg, Prompts):
            return cfg
        rubric = cfg.get("rubric") or {}
        judge = cfg.get("judge") or {}
        wanted = {
            "data_description": cfg.get("data_description"),
            "example_name": cfg.get("example_name"),
            "max_example_chars": cfg.get("max_example_chars", 2000),
            "rubric_system": rubric.get("system"),
            "rubric_intro": rubric.get("intro"),
            "rubric_sims": rubric.get("sims"),
            "rubric_diffs_synth_from_real": rubric.get("diffs_synth_from_real"),
            "rubric_diffs_real_from_synth": rubric.get("diffs_real_from_synth"),
            "rubric_retry": rubric.get("retry"),
            "judge_system": judge.get("system"),
            "judge_rubric": judge.get("rubric"),
            "judge_example": judge.get("example"),
            "judge_question": judge.get("question"),
        }
        missing = [
            k.replace("rubric_", "rubric.", 1).replace("judge_", "judge.", 1)
            for k, v in wanted.items()
            if v is None
        ]
        if missing:
            raise SynqueError("prompts config is missing " + ", ".join(missing))
        return cls(**wanted, name=str(cfg.get("name", "custom")))  # type: ignore[arg-type]


def load_prompts(name: str | Path = "default") -> Prompts:
    """Prompts from ``configs/prompts/<name>.yaml`` (or a YAML path), outside Hydra."""
    import yaml

    path = Path(name)
    if not path.suffix:
        path = project_root() / "configs" / "prompts" / f"{name}.yaml"
    with path.open(encoding="utf-8") as fh:
        return Prompts.from_config(yaml.safe_load(fh))


def _clip(text: str, limit: int) -> str:
    """One example as shown to an LLM: whitespace-trimmed and cut to ``limit`` chars."""
    text = str(text).strip()
    return text if limit <= 0 or len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _numbered(points: Sequence[str]) -> str:
    return "\n".join(f"{i}. {p}" for i, p in enumerate(points, 1))


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
    ``[...]``/``{...}`` (with repairs: smart quotes, trailing commas, Python-style single
    quotes); complete string literals of a JSON array cut off by the token limit; bulleted
    or numbered lines. With ``lenient`` (the last attempt), any remaining non-empty lines,
    or the sentences of a single paragraph, are accepted too, so a tiny local model still
    yields a usable rubric.
    """
    if not text or not text.strip():
        return None
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    candidates = [*fenced, text.strip()]
    for source in list(candidates):
        for open_, close in (("[", "]"), ("{", "}")):
            start, end = source.find(open_), source.rfind(close)
            if 0 <= start < end:
                candidates.append(source[start : end + 1])
    for cand in candidates:
        items = _strings_from(_load_any(cand.strip()))
        if items is not None:
            cleaned = _clean(items)
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
    cleaned = _clean(body)
    return cleaned or None


# --------------------------------------------------------------------------- compile


def points_schema(n_points: int) -> dict[str, Any]:
    """JSON schema of a rubric reply: ``{"points": [1..n_points non-trivial strings]}``."""
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


def _sample(texts: Sequence[str], n: int, rng: random.Random) -> list[str]:
    texts = list(texts)
    return texts if n <= 0 or len(texts) <= n else rng.sample(texts, n)


def compile_rubric(
    llm: LLM,
    prompts: Prompts | Mapping[str, Any],
    synth_texts: Sequence[str],
    real_texts: Sequence[str],
    *,
    n_points: int = 10,
    n_samples: int = 50,
    seed: int = 0,
    max_attempts: int = 3,
    max_tokens: int = 1024,
    temperature: float = 0.0,
    progress: bool = True,
) -> Rubric:
    """Ask ``llm`` for the three point lists comparing S (synthetic) with R (real).

    ``n_samples`` examples of each set are drawn with ``random.Random(seed)`` (all when
    fewer); the three questions share one intro with the samples (prefix caching) and are
    sent as one batch. Each reply is parsed with :func:`parse_string_list`; a reply that
    does not parse is answered with the retry reminder, up to ``max_attempts`` replies in
    all (the last one parsed leniently). Lists longer than ``n_points`` are cut to the
    first ``n_points``; shorter lists are kept as they are (never padded: invented filler
    points would only add noise to the judge's prompt). Unreadable replies count as
    invalid answers in ``llm.stats``.
    """
    p = Prompts.from_config(prompts)
    if not synth_texts or not real_texts:
        raise RubricError("compile_rubric needs at least one synthetic and one real example")
    rng = random.Random(seed)
    synth = [_clip(t, p.max_example_chars) for t in _sample(synth_texts, n_samples, rng)]
    real = [_clip(t, p.max_example_chars) for t in _sample(real_texts, n_samples, rng)]
    fill = {
        "data_description": p.data_description,
        "example_name": p.example_name,
        "n_points": n_points,
        "n_synth": len(synth),
        "n_real": len(real),
        "synth_examples": _numbered(synth),
        "real_examples": _numbered(real),
    }
    intro = p.rubric_intro.format(**fill)
    asks = {
        "sims": p.rubric_sims,
        "diffs_synth_from_real": p.rubric_diffs_synth_from_real,
        "diffs_real_from_synth": p.rubric_diffs_real_from_synth,
    }
    pending: dict[str, list[Message]] = {
        name: [
            {"role": "system", "content": p.rubric_system.format(**fill)},
            {"role": "user", "content": intro + "\n\n" + ask.format(**fill)},
        ]
        for name, ask in asks.items()
    }
    found: dict[str, list[str]] = {}
    last: dict[str, str] = {}
    for attempt in range(1, max_attempts + 1):
        names = list(pending)
        replies = llm.complete(
            [
                ChatRequest(
                    pending[n],
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=seed,
                    json_schema=points_schema(n_points),
                )
                for n in names
            ],
            progress=progress,
        )
        for name, reply in zip(names, replies, strict=True):
            points = parse_string_list(reply.text, lenient=attempt == max_attempts)
            if points:
                found[name] = points[:n_points]
                del pending[name]
                continue
            llm.record_invalid()
            last[name] = reply.text
            pending[name] = [
                *pending[name],
                {"role": "assistant", "content": reply.text[:1000]},
                {"role": "user", "content": p.rubric_retry.format(**fill)},
            ]
        if not pending:
            break
    if pending:
        name = sorted(pending)[0]
        raise RubricError(
            f"could not read a list of points for {', '.join(sorted(pending))} after "
            f"{max_attempts} attempts; last reply for {name}: {last[name][:100]!r}"
        )
    return Rubric(**found)


# --------------------------------------------------------------------------- judge


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
        """The judgment column this answer fills (``v_real_A`` ...)."""
        return f"v_{DATASET_SOURCE[(self.orientation, self.target)]}_{self.orientation}"


def judge_requests(
    rubric: Rubric,
    prompts: Prompts | Mapping[str, Any],
    synth_texts: Sequence[str],
    real_texts: Sequence[str],
) -> list[JudgeItem]:
    """Every judge prompt, ordered so adjacent prompts share the longest prefix.

    Order: orientation, then example (synthetic first), then the question about A and
    about B. The prompt is system + rubric (the same for a whole orientation) + example
    (shared by its two questions) + question, so prefix caching skips the rubric and a
    backend reusing the previous prompt's KV cache only computes the new tail.
    """
    p = Prompts.from_config(prompts)
    items: list[JudgeItem] = []
    for orientation in ORIENTATIONS:
        fill = {"data_description": p.data_description, "example_name": p.example_name}
        block = p.judge_rubric.format(
            **fill,
            sims=_numbered(rubric.sims),
            diffs=_numbered(rubric.differences(orientation)),
        )
        system = {"role": "system", "content": p.judge_system.format(**fill)}
        for set_name, texts in (("synthetic", synth_texts), ("real", real_texts)):
            for index, text in enumerate(texts):
                example = p.judge_example.format(**fill, example=_clip(text, p.max_example_chars))
                for target in ORIENTATIONS:
                    question = p.judge_question.format(**fill, target=target)
                    user = {"role": "user", "content": f"{block}\n\n{example}\n\n{question}"}
                    items.append(JudgeItem(set_name, index, orientation, target, (system, user)))
    return items


def _empty_frame(synth_n: int, real_n: int) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "set": ["synthetic"] * synth_n + ["real"] * real_n,
            "index": list(range(synth_n)) + list(range(real_n)),
        }
    )
    for col in JUDGMENT_COLUMNS:
        frame[col] = NEUTRAL
    frame["n_invalid"] = 0
    return frame


def judge_examples(
    llm: LLM,
    rubric: Rubric,
    prompts: Prompts | Mapping[str, Any],
    synth_texts: Sequence[str],
    real_texts: Sequence[str],
    *,
    mode: str = "choices",
    max_tokens: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Four Likert judgments for every synthetic and every real example.

    ``mode="choices"``: ``llm.score_choices_batch`` gives a probability for each answer;
    ``v_*`` is the most probable answer and ``p_*_<k>`` columns hold the probabilities.
    ``mode="generate"``: free (or server-constrained) generation parsed with
    :func:`parse_likert`; an unreadable answer counts as invalid (``llm.stats`` and the
    row's ``n_invalid``) and is scored 2 ("unsure", the neutral answer).

    Returns one row per example: ``set`` ("synthetic"|"real"), ``index`` (position in
    its input list), ``v_real_A``, ``v_synth_A``, ``v_real_B``, ``v_synth_B`` (int 0..4),
    ``n_invalid`` and, in choices mode, the 20 float columns of :data:`PROB_COLUMNS`.
    """
    if mode not in ("choices", "generate"):
        raise SynqueError(f"judge mode must be 'choices' or 'generate', got {mode!r}")
    items = judge_requests(rubric, prompts, synth_texts, real_texts)
    frame = _empty_frame(len(synth_texts), len(real_texts))
    row_of = {("synthetic", i): i for i in range(len(synth_texts))}
    row_of.update({("real", i): len(synth_texts) + i for i in range(len(real_texts))})
    values = {c: frame[c].to_numpy(dtype=np.int64).copy() for c in JUDGMENT_COLUMNS}
    invalid = np.zeros(len(frame), dtype=np.int64)
    if mode == "choices":
        probs = llm.score_choices_batch(
            [list(it.messages) for it in items], LIKERT, progress=progress
        )
        prob_cols = {c: np.zeros(len(frame)) for c in PROB_COLUMNS}
        for item, pr in zip(items, probs, strict=True):
            row = row_of[(item.set, item.index)]
            values[item.column][row] = int(np.argmax(pr))
            for k, value in enumerate(pr):
                prob_cols[f"p{item.column[1:]}_{k}"][row] = float(value)
    else:
        replies = llm.complete(
            [
                ChatRequest(
                    list(it.messages), temperature=0.0, max_tokens=max_tokens, choices=list(LIKERT)
                )
                for it in items
            ],
            progress=progress,
        )
        for item, reply in zip(items, replies, strict=True):
            row = row_of[(item.set, item.index)]
            score = parse_likert(reply.text)
            if score is None:
                invalid[row] += 1
                score = NEUTRAL
            values[item.column][row] = score
        if invalid.sum():
            llm.record_invalid(int(invalid.sum()))
    for col in JUDGMENT_COLUMNS:
        frame[col] = values[col]
    frame["n_invalid"] = invalid
    if mode == "choices":
        for col in PROB_COLUMNS:
            frame[col] = prob_cols[col]
    return frame


def judgments_from_released(
    synth_records: Sequence[Mapping[str, Any]], real_records: Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """The paper's per-example judgment dicts (Likert strings) -> the judgments frame."""
    frame = _empty_frame(len(synth_records), len(real_records))
    invalid = np.zeros(len(frame), dtype=np.int64)
    for col, key in _RELEASED_KEYS.items():
        scores = []
        for row, rec in enumerate([*synth_records, *real_records]):
            if key not in rec:
                raise SynqueError(f"released judgment #{row} has no key {key}")
            score = parse_likert(rec[key])
            if score is None:
                invalid[row] += 1
                score = NEUTRAL
            scores.append(score)
        frame[col] = np.asarray(scores, dtype=np.int64)
    frame["n_invalid"] = invalid
    return frame


# --------------------------------------------------------------------------- scores


def _lens_arrays(synth: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(debiased LENS, raw LENS) from (n, 4) arrays in JUDGMENT_COLUMNS order."""
    pairs = ((0, 1), (2, 3))  # (real_L, synth_L) columns for L = A, B
    raw = np.zeros(len(synth))
    for r, s in pairs:
        raw += 0.5 * synth[:, r] / np.maximum(EPS, synth[:, r] + synth[:, s])
    mu_real = np.maximum(real.mean(axis=0), EPS)
    mu_synth = synth.mean(axis=0)
    mu_synth = np.where(mu_synth == 0, 1.0, mu_synth)
    e_synth = np.zeros(len(synth))
    e_real = np.zeros(len(real))
    for r, s in pairs:
        h_r, h_s = synth[:, r] / mu_real[r], synth[:, s] / mu_real[s]
        e_synth += 0.5 * h_r / (h_r + h_s + EPS)
        h_r, h_s = real[:, r] / mu_synth[r], real[:, s] / mu_synth[s]
        e_real += 0.5 * h_s / (h_r + h_s + EPS)
    lens = (e_synth.sum() + e_real.sum()) / (len(synth) + len(real))
    return float(lens), float(raw.mean())


def _split(judgments: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("set", *columns) if c not in judgments.columns]
    if missing:
        raise SynqueError("judgments table is missing columns " + ", ".join(missing))
    is_synth = (judgments["set"] == "synthetic").to_numpy()
    is_real = (judgments["set"] == "real").to_numpy()
    if not is_synth.any() or not is_real.any():
        raise SynqueError("LENS needs judgments of both synthetic and real examples")
    values = judgments[list(columns)].to_numpy(dtype=float)
    return values[is_synth], values[is_real]


def expected_scores(judgments: pd.DataFrame) -> pd.DataFrame:
    """Σ p·score per judgment (columns JUDGMENT_COLUMNS) from the probability columns."""
    scores = np.arange(len(LIKERT), dtype=float)
    out = pd.DataFrame({"set": judgments["set"].to_numpy()})
    for col in JUDGMENT_COLUMNS:
        cols = [f"p{col[1:]}_{k}" for k in range(len(LIKERT))]
        out[col] = judgments[cols].to_numpy(dtype=float) @ scores
    return out


def lens_scores(judgments: pd.DataFrame) -> dict[str, float]:
    """``lens`` (debiased, the headline) and ``lens_raw``; with probability columns also
    ``lens_expected`` and ``lens_raw_expected`` (Σ p·score instead of the argmax answer)."""
    synth, real = _split(judgments, JUDGMENT_COLUMNS)
    lens, raw = _lens_arrays(synth, real)
    out = {"lens": lens, "lens_raw": raw}
    if all(c in judgments.columns for c in PROB_COLUMNS):
        e_synth, e_real = _split(expected_scores(judgments), JUDGMENT_COLUMNS)
        lens_e, raw_e = _lens_arrays(e_synth, e_real)
        out.update({"lens_expected": lens_e, "lens_raw_expected": raw_e})
    return out


__all__ = [
    "DATASET_SOURCE",
    "EPS",
    "JUDGMENT_COLUMNS",
    "LIKERT",
    "ORIENTATIONS",
    "ORIENTATION_DIFFS",
    "PROB_COLUMNS",
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

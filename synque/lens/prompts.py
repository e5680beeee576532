"""The wording of every LENS prompt (the `prompts` config group) and how examples are shown.

Why a config group: the rubric and judge prompts decide what LENS measures, so they are
versioned with the experiment (and hashed into the run's identity) rather than buried in code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synque import SynqueError
from synque.config import project_root

#: Config path of each `Prompts` field (the YAML nests the rubric and judge wording).
PROMPT_KEYS = {
    "data_description": "data_description",
    "example_name": "example_name",
    "rubric_system": "rubric.system",
    "rubric_intro": "rubric.intro",
    "rubric_sims": "rubric.sims",
    "rubric_diffs_synth_from_real": "rubric.diffs_synth_from_real",
    "rubric_diffs_real_from_synth": "rubric.diffs_real_from_synth",
    "rubric_retry": "rubric.retry",
    "judge_system": "judge.system",
    "judge_rubric": "judge.rubric",
    "judge_example": "judge.example",
    "judge_question": "judge.question",
}


@dataclass
class Prompts:
    """The LENS prompt texts. Placeholders in braces are filled; literal braces are `{{ }}`."""

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
    #: Images are fitted into (shorter side, longer side) before a model sees them.
    max_image_size: tuple[int, int] = (224, 512)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Prompts) -> Prompts:
        """Build from a (Hydra) mapping; raises naming every missing key."""
        if isinstance(cfg, Prompts):
            return cfg
        found: dict[str, Any] = {}
        for field, path in PROMPT_KEYS.items():
            node: Any = cfg
            for part in path.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            found[field] = node
        missing = [PROMPT_KEYS[k] for k, v in found.items() if v is None]
        if missing:
            raise SynqueError("prompts config is missing " + ", ".join(missing))
        size = cfg.get("max_image_size") or (224, 512)
        return cls(
            **found,
            max_example_chars=int(cfg.get("max_example_chars", 2000)),
            name=str(cfg.get("name", "custom")),
            max_image_size=(int(size[0]), int(size[1])),
        )


def load_prompts(name: str | Path = "default") -> Prompts:
    """Prompts from `configs/prompts/<name>.yaml` (or a YAML path), outside Hydra."""
    import yaml

    path = Path(name)
    if not path.suffix:
        path = project_root() / "configs" / "prompts" / f"{name}.yaml"
    with path.open(encoding="utf-8") as fh:
        return Prompts.from_config(yaml.safe_load(fh))


def clip(text: str, limit: int) -> str:
    """One example as shown to an LLM: whitespace-trimmed and cut to `limit` characters."""
    text = str(text).strip()
    return text if limit <= 0 or len(text) <= limit else text[: limit - 1].rstrip() + "…"


def numbered(points: Sequence[str]) -> str:
    """`1. first\\n2. second`: how samples and rubric points are listed in a prompt."""
    return "\n".join(f"{i}. {p}" for i, p in enumerate(points, 1))


#: A piece of a message: text, or an image part (:mod:`synque.llm.images`).
Piece = str | Mapping[str, Any]


def shown(example: Piece, limit: int) -> Piece:
    """An example as a prompt shows it: text clipped to `limit`, an image part as it is."""
    return clip(example, limit) if isinstance(example, str) else example


def numbered_pieces(examples: Sequence[Piece]) -> list[Piece]:
    """`numbered` for examples that may be images: `1. <image>` lines."""
    pieces: list[Piece] = []
    for i, example in enumerate(examples, 1):
        pieces += [f"{chr(10) if i > 1 else ''}{i}. ", example]
    return pieces


def fill_pieces(template: str, fill: Mapping[str, Any], **slots: Sequence[Piece]) -> list[Piece]:
    """`template.format(**fill)` with each `{slot}` replaced by its pieces (images kept whole)."""
    marks = {key: f"\x00{key}\x00" for key in slots}
    pieces: list[Piece] = []
    for chunk in re.split(r"(\x00\w+\x00)", template.format(**fill, **marks)):
        key = chunk.strip("\x00")
        pieces += list(slots[key]) if chunk.startswith("\x00") and key in slots else [chunk]
    return pieces


def as_content(pieces: Sequence[Piece]) -> str | list[dict[str, Any]]:
    """Message content: one string when every piece is text (the text prompts of old, byte
    for byte), else the OpenAI-style list of text parts and image parts."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        elif not isinstance(piece, str) or piece:
            merged.append(piece)
    if all(isinstance(m, str) for m in merged):
        return "".join(merged)  # type: ignore[arg-type]
    return [{"type": "text", "text": m} if isinstance(m, str) else dict(m) for m in merged]

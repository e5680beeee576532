"""The wording of every LENS prompt (the `prompts` config group) and how examples are shown.

Why a config group: the rubric and judge prompts decide what LENS measures, so they are
versioned with the experiment (and hashed into the run's identity) rather than buried in code.
"""

from __future__ import annotations

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
        return cls(
            **found,
            max_example_chars=int(cfg.get("max_example_chars", 2000)),
            name=str(cfg.get("name", "custom")),
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

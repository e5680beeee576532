"""Recorded outputs instead of a model: an earlier run's response cache or a JSONL file.

Why: a judging run can be reproduced, reviewed or tested without the model that made it.
Matching ignores backend kind, model and sampling params: a request matches a recording with
the same operation, messages and choices (:func:`~synque.llm.cache.lookup_key`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from synque import SynqueError
from synque.llm.base import (
    DEFAULT_MAX_INVALID_RATE,
    LLM,
    ChatRequest,
    Completion,
    Message,
    OnComplete,
    OnScore,
)
from synque.llm.cache import ResponseCache, iter_cache_rows, lookup_key

RECORDED_FIELDS = ("text", "probs", "prompt_tokens", "completion_tokens")


class MissingRecordingError(SynqueError, LookupError):
    """Raised by `replay` when a request was never recorded."""


class ReplayLLM(LLM):
    """Serves recordings: a sqlite response cache, or JSONL lines.

    JSONL lines are `{"key": <lookup_key>, "text": ...}` or `{"messages": [...], "text":
    ...}`, and for scored choices `{"messages": ..., "choices": [...], "probs": [...]}`.
    With several recordings of one request, `recorded_model` picks one; else the newest wins.
    """

    kind = "replay"
    #: `judge`: which released judge's judgments the lens stage reads with llm=replay.
    config_keys: ClassVar[tuple[str, ...]] = (*LLM.config_keys, "judge")
    uses_cache = False  # recordings are read, never written
    sees_images = True  # recordings are matched by image digest like any other request

    def __init__(
        self,
        recordings: Path | str,
        cache: ResponseCache | None = None,
        *,
        recorded_model: str | None = None,
        model: str = "replay",
        name: str | None = None,
        max_invalid_rate: float = DEFAULT_MAX_INVALID_RATE,
    ) -> None:
        super().__init__(model, cache, name, max_invalid_rate)
        self.recordings = Path(recordings)
        if not self.recordings.exists():
            raise SynqueError(f"llm.recordings: replay recordings not found: {self.recordings}")
        self._index: dict[str, dict[str, Any]] = {}
        if self.recordings.suffix == ".jsonl":
            self._load_jsonl()
        else:
            for row in iter_cache_rows(self.recordings):
                if row["lookup"] and recorded_model in (None, row["model"]):
                    self._index[row["lookup"]] = row["payload"]

    def _load_jsonl(self) -> None:
        with self.recordings.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if "key" in rec:
                    key = rec["key"]
                elif "messages" in rec:
                    op = "score" if "probs" in rec else "complete"
                    key = lookup_key(op, rec["messages"], rec.get("choices"))
                else:
                    raise SynqueError(f"{self.recordings}:{number}: needs 'key' or 'messages'")
                self._index[key] = {k: v for k, v in rec.items() if k in RECORDED_FIELDS}

    def _find(
        self, op: str, messages: Sequence[Message], choices: Sequence[str] | None, field: str
    ) -> dict[str, Any]:
        key = lookup_key(op, messages, choices)
        rec = self._index.get(key)
        if rec is None or field not in rec:
            first = next((m.get("content") for m in messages if m.get("role") == "user"), "")
            if isinstance(first, list):  # typed parts: preview their text
                first = " ".join(str(p.get("text", "")) for p in first if isinstance(p, Mapping))
            preview = str(first)[:80].replace("\n", " ")
            raise MissingRecordingError(
                f"no recorded {op} for lookup key {key[:16]} (user message {preview!r}) "
                f"in {self.recordings}"
            )
        return rec

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        for j, req in enumerate(requests):
            rec = self._find("complete", req.messages, req.choices, "text")
            done(
                j,
                Completion(
                    rec["text"],
                    int(rec.get("prompt_tokens", 0)),
                    int(rec.get("completion_tokens", 0)),
                ),
            )

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        for j, messages in enumerate(items):
            done(j, list(self._find("score", messages, choices, "probs")["probs"]))

"""The LLM interface every backend shares: requests, replies, usage counters, cached calls.

Why a base class: the `rubric`, `lens` and `generate` stages must run unchanged on any
backend, and a judging job of many thousand calls that is killed must resume without paying
for a finished call twice. The base class does the cache lookups, commits each result the
moment a backend reports it, counts usage and shows progress; a backend implements only
`_complete` (free or constrained text) and/or `_score` (a probability per answer choice).

Messages follow the OpenAI chat format. `content` is a string or a list of typed parts:
`{"type": "text", "text": ...}` and synque's image part (:mod:`synque.llm.images`), which
each vision backend turns into what its model takes. Cache keys hash the whole message
structure, an image by the digest of its bytes. Text-only backends flatten parts with
:func:`text_messages`, and a stage asks `check_inputs` before any run whether a backend can
see the task's examples at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tqdm.auto import tqdm

from synque import SynqueError
from synque.llm.cache import ResponseCache, lookup_key, request_key

#: One chat message: {"role": ..., "content": str | list of typed parts}.
Message = dict[str, Any]
OnComplete = Callable[[int, "Completion"], None]
OnScore = Callable[[int, list[float]], None]


@dataclass
class ChatRequest:
    """One chat call; everything that changes the answer is here, so it can key the cache."""

    messages: list[Message]
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    choices: list[str] | None = None

    def params(self) -> dict[str, Any]:
        """Sampling parameters that belong in the cache key."""
        return {
            "temperature": float(self.temperature),
            "max_tokens": int(self.max_tokens),
            "seed": self.seed,
            "json_schema": self.json_schema,
            "choices": list(self.choices) if self.choices is not None else None,
        }


@dataclass
class Completion:
    """A reply with its token counts; `cached` tells whether it cost a call."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @staticmethod
    def from_cache(row: Mapping[str, Any]) -> Completion | None:
        """The completion a cache payload holds (None when it holds none)."""
        if "text" not in row:
            return None
        return Completion(
            row["text"], row.get("prompt_tokens", 0), row.get("completion_tokens", 0), True
        )

    def to_cache(self) -> dict[str, Any]:
        """The cache payload of this completion (the stored row format; never change it)."""
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass
class LLMStats:
    """Counters a stage logs to MLflow, so cost and cache efficiency are visible per run."""

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0
    invalid_answers: int = 0
    request_bytes: int = 0  # bytes of request bodies sent to a server (images included)

    def metrics(self, prefix: str = "llm_") -> dict[str, float]:
        """Flat float metrics (`llm_calls` ...) ready for `mlflow.log_metrics`."""
        out = {
            "requests": self.requests,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "cache_hit_rate": self.cache_hits / self.requests if self.requests else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": self.seconds,
            "calls_per_s": self.calls / self.seconds if self.seconds > 0 else 0.0,
            "retries": self.retries,
            "invalid_answers": self.invalid_answers,
            "request_bytes": self.request_bytes,
        }
        return {prefix + k: float(v) for k, v in out.items()}


def text_messages(messages: Sequence[Message]) -> list[Message]:
    """Messages with list content joined to one string, for text-only backends.

    Raises a `SynqueError` when a part is not text (an image sent to a text-only model
    would otherwise be dropped silently and the judge would answer without seeing it).
    """
    flat = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif isinstance(part, str):
                    parts.append(part)
                else:
                    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                    raise SynqueError(
                        f"llm: this backend is text-only; a message carries {kind} content"
                    )
            content = "\n".join(parts)
        flat.append({**message, "content": content})
    return flat


class LLM:
    """Base class: cache lookups, stats and progress; backends implement two hooks.

    Backends implement `_complete(requests, done)` and `_score(messages_list, choices,
    done)` and call `done(i, result)` as soon as item `i` is finished, which commits it to
    the cache at once (why: a kill loses at most the calls in flight).

    Building: a config names the class with `_target_`; keyword arguments of `__init__` are
    its settings. `kind` names the backend when a config has no `_target_`, and
    `config_keys` are settings read by others (`build_llm`, the stages), not by `__init__`.
    """

    kind: ClassVar[str] = "base"
    #: Config keys read by `build_llm` (cache, cache_file) and the lens stage (judge_mode).
    config_keys: ClassVar[tuple[str, ...]] = ("cache", "cache_file", "judge_mode")
    #: Whether `build_llm` gives this backend the persistent response cache.
    uses_cache: ClassVar[bool] = True
    #: Whether the backend can be sent image parts at all (see `check_inputs`).
    sees_images: ClassVar[bool] = False

    def __init__(
        self, model: str, cache: ResponseCache | None = None, name: str | None = None
    ) -> None:
        self.model = model
        self.cache = cache
        self.name = name or f"{self.kind}:{model}"
        self.stats = LLMStats()
        self._lock = threading.Lock()

    @classmethod
    def check_inputs(cls, settings: Mapping[str, Any], modality: str) -> None:
        """Raise one line, before any run starts, when this backend cannot see the examples.

        `settings` is the `llm` config (as a mapping); `modality` the task's ("text" or
        "image"). Backends whose answer depends on the model override this.
        """
        if modality == "image" and not cls.sees_images:
            raise SynqueError(
                f"llm.model: the {cls.kind} backend is text-only and this task's examples are "
                "images; use llm=local with an image-text-to-text llm.model, or llm=openai"
            )

    # -- extension points
    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        raise SynqueError(f"llm: the {self.kind} backend cannot generate text")

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        raise SynqueError(
            f"llm: the {self.kind} backend cannot score answer choices; use llm.judge_mode=generate"
        )

    def _key_extra(self, op: str) -> dict[str, Any]:
        """Backend settings that change outputs and so belong in the cache key."""
        return {}

    # -- public
    def complete(self, requests: Sequence[ChatRequest], progress: bool = True) -> list[Completion]:
        """Answer every request (cache first), in input order."""
        extra = self._key_extra("complete")
        keys = [
            request_key(self.kind, self.model, "complete", r.messages, {**r.params(), **extra})
            for r in requests
        ]

        def tally(comp: Completion) -> None:
            self.stats.prompt_tokens += comp.prompt_tokens
            self.stats.completion_tokens += comp.completion_tokens

        return self._cached(
            "complete",
            keys,
            lookup=lambda i: lookup_key("complete", requests[i].messages, requests[i].choices),
            read=Completion.from_cache,
            write=Completion.to_cache,
            compute=lambda todo, done: self._complete([requests[i] for i in todo], done),
            tally=tally,
            progress=progress,
        )

    def score_choices(self, messages: Sequence[Message], choices: Sequence[str]) -> list[float]:
        """Probability of each choice as the assistant's reply (sums to 1)."""
        return self.score_choices_batch([messages], choices, progress=False)[0]

    def score_choices_batch(
        self,
        messages_list: Sequence[Sequence[Message]],
        choices: Sequence[str],
        progress: bool = True,
    ) -> list[list[float]]:
        """`score_choices` for many prompts, in order (keep shared prefixes adjacent)."""
        choices = list(choices)
        if len(choices) < 2:
            raise ValueError("score_choices needs at least two choices")
        params = {"choices": choices, **self._key_extra("score")}
        keys = [request_key(self.kind, self.model, "score", list(m), params) for m in messages_list]
        return self._cached(
            "score",
            keys,
            lookup=lambda i: lookup_key("score", list(messages_list[i]), choices),
            read=lambda hit: list(hit["probs"]) if "probs" in hit else None,
            write=lambda probs: {"probs": probs},
            compute=lambda todo, done: self._score(
                [list(messages_list[i]) for i in todo], choices, done
            ),
            tally=None,
            progress=progress,
        )

    def record_invalid(self, n: int = 1) -> None:
        """Count answers that matched no allowed choice (logged as `llm_invalid_answers`)."""
        with self._lock:
            self.stats.invalid_answers += n

    def metrics(self) -> dict[str, float]:
        """`stats` as MLflow metrics: llm_requests, llm_calls, llm_cache_hits, ..."""
        return self.stats.metrics()

    def close(self) -> None:
        """Release the cache connection (and engines in subclasses)."""
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one cached loop behind `complete` and `score_choices_batch`
    def _cached(
        self,
        op: str,
        keys: list[str],
        *,
        lookup: Callable[[int], str],
        read: Callable[[dict[str, Any]], Any],
        write: Callable[[Any], dict[str, Any]],
        compute: Callable[[list[int], Callable[[int, Any], None]], None],
        tally: Callable[[Any], None] | None,
        progress: bool,
    ) -> list[Any]:
        """Results by position: cache hits first, then one backend call per unique miss.

        `compute(positions, done)` asks the backend for the first position of each missing
        key; `done(j, result)` stores result j (cache row, stats, every duplicate position).
        """
        results: list[Any] = [None] * len(keys)
        pending: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache is not None else None
            value = read(hit) if hit is not None else None
            if value is not None:
                results[i] = value
            else:
                pending.setdefault(key, []).append(i)
        hits = len(keys) - sum(len(v) for v in pending.values())
        with self._lock:
            self.stats.requests += len(keys)
            self.stats.cache_hits += hits
        todo = list(pending)
        bar = tqdm(
            total=len(keys),
            initial=hits,
            desc=f"{self.name} {op}",
            leave=False,
            disable=not (progress and todo),
        )

        def done(j: int, result: Any) -> None:
            key = todo[j]
            if self.cache is not None:
                self.cache.put(
                    key,
                    write(result),
                    lookup=lookup(pending[key][0]),
                    kind=self.kind,
                    model=self.model,
                    op=op,
                )
            with self._lock:
                self.stats.calls += 1
                if tally is not None:
                    tally(result)
            for i in pending[key]:
                results[i] = result
            bar.update(len(pending[key]))

        start = time.perf_counter()
        try:
            if todo:
                compute([pending[k][0] for k in todo], done)
        finally:
            with self._lock:
                self.stats.seconds += time.perf_counter() - start
            bar.close()
        missing = sum(r is None for r in results)
        if missing:
            raise RuntimeError(f"{self.name}: backend returned no result for {missing} request(s)")
        return results

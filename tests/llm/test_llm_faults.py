"""A faulty LLM server: 500s, hangs, refused connections, non-JSON and out-of-range Likert
answers. Retries are bounded, the error is one line naming the server and the problem, the
response cache holds only valid answers, and a rerun after the server recovers makes only
the calls that are missing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from synque import SynqueError
from synque.lens import LIKERT, Rubric, compile_rubric, judge_examples, load_prompts
from synque.lens.rubric import RubricError, points_schema
from synque.llm import (
    CACHE_FILE,
    ChatRequest,
    OpenAILLM,
    ResponseCache,
    build_llm,
    iter_cache_rows,
    match_choice,
    request_key,
)
from synque.llm.base import MIN_JUDGED_FOR_RATE, parses_as_json
from tests.conftest import needs_data
from tests.fakes.judges import user
from tests.fakes.openai_server import OUT_OF_RANGE, FakeOpenAI, fake_openai_server

MODEL = "fake-model"
FAILING = "(the fake server is failing on purpose)"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai_server() as server:
        yield server


def openai_llm(url: str, cache_dir: Path | None, **over: Any) -> OpenAILLM:
    """One request in flight, so every count below is exact."""
    cfg = {
        "kind": "openai",
        "model": MODEL,
        "base_url": url,
        "retry_base_delay": 0.01,
        "max_retries": 3,
        "max_concurrency": 1,
        "timeout": 30,
        **over,
    }
    llm = build_llm(cfg, cache_dir)
    assert isinstance(llm, OpenAILLM)
    return llm


def rows(cache_dir: Path) -> list[dict[str, Any]]:
    path = cache_dir / CACHE_FILE
    return list(iter_cache_rows(path)) if path.exists() else []


def assert_only_valid_answers(cache_dir: Path) -> int:
    """Every cached payload is an answer: one-hot Likert probabilities, a Likert phrase or
    JSON; returns how many rows there are."""
    found = rows(cache_dir)
    for row in found:
        payload = row["payload"]
        if row["op"] == "score":
            assert sorted(payload["probs"]) == [0.0] * (len(LIKERT) - 1) + [1.0], payload
        else:
            text = payload["text"]
            assert match_choice(text, LIKERT) is not None or parses_as_json(text), payload
    return len(found)


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, SynqueError)
    return message


def judge_prompts(n: int) -> list[list[dict[str, Any]]]:
    return [user(f"How likely is example {i} to come from dataset A?") for i in range(n)]


# --------------------------------------------------------------------------- transport


def test_always_500_gives_up_after_bounded_retries_with_one_line(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.fail(500)
    llm = openai_llm(fake.url, tmp_path, max_retries=3)
    with pytest.raises(SynqueError) as err:
        llm.complete([ChatRequest(user("hello"))], progress=False)
    assert one_line(err) == (
        f"llm: the server at {fake.url} (model {MODEL}) kept failing: "
        f"HTTP 500 Internal Server Error {FAILING} after 3 retries"
    )
    assert len(fake.bodies) == 4 and llm.stats.retries == 3 and fake.statuses == [500] * 4
    # a question with choices is first sent constrained; a 500 there is not retried but
    # taken for a refusal of the constraint, so the plain request gets the retries
    with pytest.raises(SynqueError, match="kept failing: HTTP 500"):
        llm.complete([ChatRequest(user("pick"), choices=["yes", "no"])], progress=False)
    assert len(fake.bodies) == 4 + 1 + 4 and llm.stats.retries == 6
    assert rows(tmp_path) == []


def test_500_for_the_first_requests_then_fine(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.fail(503, times=2)
    llm = openai_llm(fake.url, tmp_path)
    out = llm.complete([ChatRequest(user("hello"))], progress=False)
    assert out[0].text == "likely" and llm.stats.retries == 2
    assert fake.statuses == [503, 503, 200]
    assert assert_only_valid_answers(tmp_path) == 1


def test_a_hanging_server_times_out_after_bounded_retries(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.hang(5.0)
    llm = openai_llm(fake.url, tmp_path, max_retries=2, timeout=0.3)
    start = time.perf_counter()
    with pytest.raises(SynqueError) as err:
        llm.complete([ChatRequest(user("hello"))], progress=False)
    assert time.perf_counter() - start < 4.0  # 3 x 0.3 s and short backoffs, never 5 s
    assert one_line(err) == (
        f"llm: the server at {fake.url} (model {MODEL}) kept failing: "
        "no reply within llm.timeout=0.3s after 2 retries"
    )
    assert len(fake.bodies) == 3 and llm.stats.retries == 2 and rows(tmp_path) == []
    # it recovers: the next request is answered
    fake.heal()
    assert llm.complete([ChatRequest(user("again"))], progress=False)[0].text == "likely"


def test_no_server_at_all_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    llm = openai_llm(url, tmp_path, max_retries=1)
    with pytest.raises(SynqueError) as err:
        llm.complete([ChatRequest(user("hello"))], progress=False)
    message = one_line(err)
    assert message.startswith(f"llm: the server at {url} (model {MODEL}) kept failing: cannot ")
    assert message.endswith("after 1 retry") and llm.stats.retries == 1


def test_refusals_and_rate_limits_are_one_line_and_still_openai_errors(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    import openai

    fake.fail(401)
    llm = openai_llm(fake.url, tmp_path)
    with pytest.raises(openai.AuthenticationError) as refused:
        llm.complete([ChatRequest(user("hello"))], progress=False)
    assert one_line(refused) == (
        f"llm: the server at {fake.url} (model {MODEL}) refused a request: "
        f"HTTP 401 Unauthorized {FAILING}"
    )
    assert len(fake.bodies) == 1  # never retried
    fake.heal()
    fake.fail_next = 10  # 429 with Retry-After: 0
    with pytest.raises(openai.RateLimitError) as limited:
        llm.complete([ChatRequest(user("hello"))], progress=False)
    assert one_line(limited).endswith(
        "kept failing: HTTP 429 Too Many Requests (slow down) after 3 retries"
    )


def test_a_server_dying_midway_then_recovering_resumes_with_the_missing_calls(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    prompts = judge_prompts(10)
    fake.fail(500, after=4)  # four answers, then every request fails
    llm = openai_llm(fake.url, tmp_path)
    with pytest.raises(SynqueError, match=r"kept failing: HTTP 500 .* after 3 retries$"):
        llm.score_choices_batch(prompts, LIKERT, progress=False)
    assert len(fake.bodies) == 4 + 4 and llm.stats.retries == 3
    assert assert_only_valid_answers(tmp_path) == 4  # what was answered stays cached
    llm.close()

    fake.heal()
    fake.bodies.clear()
    rerun = openai_llm(fake.url, tmp_path)
    probs = rerun.score_choices_batch(prompts, LIKERT, progress=False)
    assert probs == [[0.0, 0.0, 0.0, 1.0, 0.0]] * 10
    assert len(fake.bodies) == 6 and rerun.stats.calls == 6 and rerun.stats.cache_hits == 4
    assert assert_only_valid_answers(tmp_path) == 10


# --------------------------------------------------------------------------- answers


def test_out_of_range_likert_answers_fail_the_judge_and_are_never_cached(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    # the tolerant reader takes "extremely likely" for "likely" (a whole-word match), so
    # the answers no reader can place are those it reads as nothing
    unreadable = [a for a in OUT_OF_RANGE if match_choice(a, LIKERT) is None]
    assert {"7", ""} <= set(unreadable)
    fake.answer_likert(unreadable)
    llm = openai_llm(fake.url, tmp_path)
    with pytest.raises(SynqueError) as err:
        llm.score_choices_batch(judge_prompts(50), LIKERT, progress=False)
    n = MIN_JUDGED_FOR_RATE  # it stops as soon as the rate means something
    assert one_line(err).startswith(
        f"llm: the server at {fake.url} (model {MODEL}) gave invalid answers to {n} of {n} "
        "questions (100% > llm.max_invalid_rate=0.5); last: "
    )
    assert str(err.value).endswith(f"names none of {list(LIKERT)}")
    assert len(fake.bodies) == n and llm.stats.invalid_answers == n
    assert rows(tmp_path) == []

    # with the bound off they are returned (uniform), counted, and still not cached
    tolerant = openai_llm(fake.url, tmp_path, max_invalid_rate=1.0)
    probs = tolerant.score_choices_batch(judge_prompts(30), LIKERT, progress=False)
    assert probs == [[0.2] * 5] * 30 and tolerant.stats.invalid_answers == 30
    assert rows(tmp_path) == []

    # half of them valid is within the default bound; only the valid half is cached
    fake.answer_likert(["very likely", "7"])
    mixed = openai_llm(fake.url, tmp_path)
    probs = mixed.score_choices_batch(judge_prompts(30), LIKERT, progress=False)
    assert probs.count([0.0, 0.0, 0.0, 0.0, 1.0]) == 15 and mixed.stats.invalid_answers == 15
    assert assert_only_valid_answers(tmp_path) == 15

    # the server recovers: a rerun asks exactly the 15 questions it has no answer to
    fake.heal()
    fake.bodies.clear()
    rerun = openai_llm(fake.url, tmp_path)
    rerun.score_choices_batch(judge_prompts(30), LIKERT, progress=False)
    assert len(fake.bodies) == 15 and rerun.stats.cache_hits == 15
    assert assert_only_valid_answers(tmp_path) == 30


def test_generated_likert_answers_outside_the_scale_are_not_cached(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """judge_mode=generate: `complete` with choices; an answer naming none is not cached."""
    fake.answer_likert(["likely", "7", "", "no idea"])  # one in four valid
    rubric = Rubric(["alike"], ["synthetic differs"], ["real differs"])
    prompts = load_prompts("default")
    synth, real = [f"synthetic {i}" for i in range(3)], [f"real {i}" for i in range(3)]
    llm = openai_llm(fake.url, tmp_path)
    with pytest.raises(SynqueError, match=r"gave invalid answers to 15 of 20 questions \(75%"):
        judge_examples(llm, rubric, prompts, synth, real, mode="generate", progress=False)
    assert assert_only_valid_answers(tmp_path) == 5

    tolerant = openai_llm(fake.url, tmp_path, max_invalid_rate=1.0)
    frame = judge_examples(tolerant, rubric, prompts, synth, real, mode="generate", progress=False)
    asked = tolerant.stats.calls
    assert asked == 24 - 5 and int(frame["n_invalid"].sum()) == tolerant.stats.invalid_answers
    assert assert_only_valid_answers(tmp_path) == 5 + asked - tolerant.stats.invalid_answers


def test_an_invalid_answer_in_an_older_cache_is_asked_again(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    request = ChatRequest(user("judge this"), max_tokens=16, choices=list(LIKERT))
    key = request_key(
        "openai",
        MODEL,
        "complete",
        request.messages,
        {**request.params(), "structured_output": "json_schema"},  # as `complete` keys it
    )
    old = ResponseCache(tmp_path / CACHE_FILE)
    old.put(key, {"text": "7"}, kind="openai", model=MODEL, op="complete")
    old.close()
    llm = openai_llm(fake.url, tmp_path)
    assert llm.complete([request], progress=False)[0].text == "likely"
    assert len(fake.bodies) == 1 and llm.stats.cache_hits == 0
    assert [r["payload"]["text"] for r in rows(tmp_path)] == ["likely"]


def test_non_json_rubric_replies_are_retried_by_the_stage_and_never_cached(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    prompts = load_prompts("default")
    synth, real = ["synthetic a", "synthetic b"], ["real a", "real b"]
    schema = points_schema(3)
    fake.answer_not_json()
    llm = openai_llm(fake.url, tmp_path)
    reply = llm.complete([ChatRequest(user("points?"), json_schema=schema)], progress=False)
    assert reply[0].text.startswith("Sure!") and rows(tmp_path) == []
    # unreadable even leniently (empty): bounded by rubric.max_attempts, 3 lists x 3 tries
    fake.answer_not_json("")
    fake.bodies.clear()
    with pytest.raises(RubricError, match="after 3 attempts"):
        compile_rubric(llm, prompts, synth, real, n_points=3, max_attempts=3, progress=False)
    assert len(fake.bodies) == 9 and rows(tmp_path) == []
    # prose: the last attempt reads it leniently; still nothing of it is cached
    fake.answer_not_json()
    prose = compile_rubric(llm, prompts, synth, real, n_points=3, max_attempts=3, progress=False)
    assert prose.sims == ["Sure!", "The two sets differ in tone and in length."]
    assert rows(tmp_path) == []

    fake.heal()
    fake.bodies.clear()
    rubric = compile_rubric(llm, prompts, synth, real, n_points=3, progress=False)
    assert rubric.sims == ["a point"] and len(fake.bodies) == 3
    assert assert_only_valid_answers(tmp_path) == 3
    again = openai_llm(fake.url, tmp_path)
    compile_rubric(again, prompts, synth, real, n_points=3, progress=False)
    assert again.stats.cache_hits == 3 and len(fake.bodies) == 3


def test_max_invalid_rate_is_checked(fake: FakeOpenAI) -> None:
    with pytest.raises(SynqueError, match=r"^llm.max_invalid_rate must be between 0 and 1"):
        openai_llm(fake.url, None, max_invalid_rate=1.5)


# --------------------------------------------------------------------------- the CLI


@needs_data
def test_lens_job_against_an_always_500_server_fails_with_one_line(
    fake: FakeOpenAI, cli, tracking_uri: str, tmp_path: Path
) -> None:
    fake.fail(500)
    args = [
        f"paths.cache_dir={tmp_path / 'cache'}",  # its own response cache: every call counts
        "+experiment=sentiment_lens",
        "llm=openai",
        f"llm.base_url={fake.url}",
        f"llm.model={MODEL}",
        "llm.max_retries=2",
        "llm.retry_base_delay=0.01",
        "task.max_candidates=1",
        "task.max_examples=5",
        "task.max_real=5",
        "rubric.n_points=3",
        "progress=false",
    ]
    proc = cli(*args, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("synque: error:")]
    assert errors == [
        f"synque: error: llm: the server at {fake.url} (model {MODEL}) kept failing: "
        f"HTTP 500 Internal Server Error {FAILING} after 2 retries"
    ]
    assert "Traceback" not in proc.stderr
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("synque-sentiment")
    runs = client.search_runs([experiment.experiment_id])
    assert runs and {r.info.status for r in runs} == {"FAILED"}

    # the server recovers: the same command finishes; every call it made is one the
    # parent counted (the healed rubric lists are alike, so the two orientations' prompts
    # coincide and 40 judgments need 20 calls)
    fake.heal()
    fake.bodies.clear()
    done = cli(*args)
    assert done.returncode == 0
    runs = client.search_runs([experiment.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = [r for r in runs if r.data.tags["synque.role"] == "parent"]
    assert sorted(r.info.status for r in parents) == ["FAILED", "FINISHED"]
    usage = next(r for r in parents if r.info.status == "FINISHED").data.metrics
    assert usage["llm_requests"] == 3 + 40 and usage["llm_invalid_answers"] == 0
    assert len(fake.bodies) == usage["llm_calls"] == 3 + 20

"""MLflow traces of LLM calls: one span per recorded request, in the run that asked.

Fake backends inside real runs of a temporary sqlite store; the traces are read back the
way a user would (`mlflow.search_traces(locations=..., run_id=...)`), and a `lens` job
against a fake OpenAI server shows them in each candidate set's run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.entities import Trace

from synque import SynqueError
from synque.lens import LIKERT
from synque.llm import ChatRequest, ResponseCache
from synque.llm.tracing import DEFAULT_FIRST, DEFAULT_SAMPLE, Tracer, stage_tracer
from tests.fakes.judges import Counting, user
from tests.fakes.openai_server import FakeOpenAI, fake_openai_server

CHOICES = ["no", "yes"]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One sqlite store for the module (creating its schema takes seconds): URI, experiment."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment(
        "traces", artifact_location=(folder / "artifacts").as_uri()
    )
    return uri, experiment


@pytest.fixture
def store(database: tuple[str, str]) -> Iterator[str]:
    """The module's store as MLflow's tracking URI (each test in runs of its own): experiment."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(database[0])
    try:
        yield database[1]
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


def traces_of(experiment: str, run_id: str) -> list[Trace]:
    """The run's traces, oldest first."""
    found = mlflow.search_traces(locations=[experiment], run_id=run_id, return_type="list")
    return sorted(found, key=lambda t: t.info.request_time)


def requests_of(trace: Trace) -> list[Any]:
    """The request spans of a batch trace, by position."""
    spans = [s for s in trace.data.spans if s.parent_id is not None]
    return sorted(spans, key=lambda s: s.attributes["position"])


def counting(tmp_path: Path, tracer: Tracer | None) -> Counting:
    llm = Counting(ResponseCache(tmp_path / "cache.sqlite"))
    llm.tracer = tracer
    return llm


def test_all_records_one_span_per_request_attached_to_the_run(store: str, tmp_path: Path) -> None:
    llm = counting(tmp_path, Tracer("all"))
    prompts = [user(f"question {i}") for i in range(5)]
    with mlflow.start_run(experiment_id=store) as run:
        llm.score_choices_batch(prompts, CHOICES, progress=False)
        llm.complete([ChatRequest(user("say hi"), max_tokens=7)], progress=False)
    score, complete = traces_of(store, run.info.run_id)
    assert score.info.trace_metadata["mlflow.sourceRun"] == run.info.run_id
    assert score.info.tags["synque.llm.backend"] == "counting"
    root = score.data.spans[0] if score.data.spans[0].parent_id is None else None
    assert root is not None and root.name == "llm.score"
    assert root.outputs == {
        "requests": 5,
        "cache_hits": 0,
        "calls": 5,
        "invalid_answers": 0,
        "recorded": 5,
    }
    spans = requests_of(score)
    assert [s.attributes["position"] for s in spans] == [0, 1, 2, 3, 4]
    for i, span in enumerate(spans):
        assert span.inputs == {"messages": prompts[i], "choices": CHOICES}
        assert span.outputs == {"answer": "no", "probs": {"no": 0.5, "yes": 0.5}}
        assert span.attributes["cache_hit"] is False
        assert span.attributes["backend"] == "counting" and span.attributes["model"] == "m"
        assert span.attributes["latency_s"] >= 0
    (reply,) = requests_of(complete)
    assert reply.inputs["messages"] == user("say hi") and reply.inputs["max_tokens"] == 7
    assert reply.outputs == {"text": "echo say hi t=0.0"}
    assert reply.attributes["prompt_tokens"] == 3 and reply.attributes["completion_tokens"] == 2


def test_a_cached_rerun_says_cache_hit_with_the_lookup_latency(store: str, tmp_path: Path) -> None:
    prompts = [user(f"question {i}") for i in range(4)]
    with mlflow.start_run(experiment_id=store):
        counting(tmp_path, None).score_choices_batch(prompts, CHOICES, progress=False)
    rerun = counting(tmp_path, Tracer("all"))
    with mlflow.start_run(experiment_id=store) as run:
        rerun.score_choices_batch(prompts, CHOICES, progress=False)
    assert rerun.made == 0
    (trace,) = traces_of(store, run.info.run_id)
    assert trace.data.spans[0].outputs["cache_hits"] == 4
    spans = requests_of(trace)
    assert len(spans) == 4
    for span in spans:
        assert span.attributes["cache_hit"] is True
        assert 0 <= span.attributes["latency_s"] < 1.0
        assert span.attributes["prompt_tokens"] == 0
        assert span.outputs["probs"] == {"no": 0.5, "yes": 0.5}


def test_none_records_nothing(store: str, tmp_path: Path) -> None:
    assert Tracer.from_config({"traces": "none"}) is None
    llm = counting(tmp_path, Tracer.from_config({"traces": "none"}))
    with mlflow.start_run(experiment_id=store) as run:
        llm.score_choices_batch([user("q")], CHOICES, progress=False)
    assert traces_of(store, run.info.run_id) == []


def test_sample_records_at_most_the_configured_number_per_run(store: str, tmp_path: Path) -> None:
    tracer = Tracer.from_config({"traces": "sample", "trace_sample": 7, "trace_first": 3})
    llm = counting(tmp_path, tracer)
    first = [user(f"a {i}") for i in range(25)]
    second = [user(f"b {i}") for i in range(15)]
    with mlflow.start_run(experiment_id=store) as run:
        llm.score_choices_batch(first, CHOICES, progress=False)
        llm.score_choices_batch(second, CHOICES, progress=False)
    with mlflow.start_run(experiment_id=store) as other:  # a run has its own allowance
        llm.score_choices_batch(first, CHOICES, progress=False)
    traces = traces_of(store, run.info.run_id)
    assert len(traces) == 1  # the first batch used the whole allowance: no second trace
    picked = [s.attributes["position"] for s in requests_of(traces[0])]
    assert len(picked) == 7 and picked[:3] == [0, 1, 2]  # the run's first three, then a pick
    assert traces[0].data.spans[0].outputs["requests"] == 25
    (again,) = traces_of(store, other.info.run_id)
    assert [s.attributes["position"] for s in requests_of(again)] == picked  # seeded
    assert [s.attributes["cache_hit"] for s in requests_of(again)] == [True] * 7


def test_sample_defaults_and_settings_are_checked() -> None:
    tracer = Tracer.from_config({})
    assert tracer is not None and tracer.mode == "sample"
    assert (tracer.sample, tracer.first) == (DEFAULT_SAMPLE, DEFAULT_FIRST)
    assert len(tracer.positions("r", 1000)) == DEFAULT_SAMPLE
    assert tracer.positions("r", 1000) == []  # allowance spent
    assert Tracer("all").positions("r", 3) == [0, 1, 2]
    with pytest.raises(SynqueError, match="tracking.traces must be one of all, sample, none"):
        Tracer.from_config({"traces": "some"})


def test_image_parts_appear_by_digest_and_invalid_answers_are_marked(
    store: str, tmp_path: Path
) -> None:
    image = {"type": "image", "image": str(tmp_path / "cat.png"), "sha256": "ab" * 32}
    image["max_size"] = [224, 512]
    messages = [{"role": "user", "content": [{"type": "text", "text": "How sure?"}, image]}]
    llm = counting(tmp_path, Tracer("all"))
    with mlflow.start_run(experiment_id=store) as run:
        llm.complete([ChatRequest(messages, choices=list(LIKERT))], progress=False)
    (span,) = requests_of(traces_of(store, run.info.run_id)[0])
    part = span.inputs["messages"][0]["content"][1]
    assert part == {"type": "image", "sha256": "ab" * 32, "max_size": [224, 512]}
    assert "cat.png" not in str(span.inputs) and "base64" not in str(span.inputs)
    assert "names none of" in span.attributes["invalid"]  # the echo is no Likert answer


def test_no_trace_outside_a_run_and_a_failed_write_never_fails_the_call(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    llm = counting(tmp_path, Tracer("all"))
    assert llm.score_choices_batch([user("q")], CHOICES, progress=False)  # no run: no trace
    from mlflow.tracing.client import TracingClient

    def broken(self: Any, info: Any) -> None:
        raise RuntimeError("store is gone")

    monkeypatch.setattr(TracingClient, "start_trace", broken)
    with caplog.at_level(logging.WARNING), mlflow.start_run(experiment_id=store):
        assert llm.score_choices_batch([user("q2")], CHOICES, progress=False)
    assert "trace of a score batch was not written: store is gone" in caplog.text


def test_stage_tracer_reads_tracking_settings_and_turns_mlflow_tracing_off(
    store: str, tmp_path: Path
) -> None:
    try:
        tracer = stage_tracer({"tracking": {"traces": "all"}})
        assert tracer is not None and tracer.mode == "all"
        # what an autologger would record
        with mlflow.start_run(experiment_id=store) as run, mlflow.start_span("autologged"):
            pass
        assert traces_of(store, run.info.run_id) == []
    finally:
        mlflow.tracing.enable()


# --------------------------------------------------------------------------- a stage


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai_server() as server:
        server.heal()  # rubric lists as JSON, "likely" to every judge question
        yield server


def test_a_lens_job_leaves_traces_in_each_candidate_sets_run(
    make_cfg, fake: FakeOpenAI, tmp_path: Path
) -> None:
    from synque.stages.lens import run_lens
    from tests.fakes.folders import make_folder

    root = make_folder(tmp_path / "movies", n_sets=2, n=6)
    cfg = make_cfg(
        "+experiment=folder_lens",
        f"task.root={root}",
        "llm=openai",
        f"llm.base_url={fake.url}",
        "llm.model=fake-judge",
        "llm.max_concurrency=2",
        f"paths.cache_dir={tmp_path / 'cache'}",  # every call is made, none read back
        "rubric.n_points=3",
        "stage.max_synthetic=3",
        "stage.max_real=3",
        "tracking.traces=all",
    )
    try:
        run_lens(cfg)
        client = mlflow.MlflowClient(cfg.tracking.uri)
        experiment = client.get_experiment_by_name("synque-movies").experiment_id
        runs = client.search_runs([experiment])
    finally:
        mlflow.tracing.enable()
    children = {
        (r.data.tags["synque.stage"], r.data.tags["synque.dataset"]): r
        for r in runs
        if r.data.tags["synque.role"] == "child"
    }
    assert set(children) == {(s, d) for s in ("lens", "rubric") for d in ("set0", "set1")}
    for (stage, _), run in children.items():
        traces = traces_of(experiment, run.info.run_id)
        assert traces, f"no traces in the {stage} run"
        spans = [s for t in traces for s in requests_of(t)]
        assert {s.attributes["backend"] for s in spans} == {"openai"}
        assert {s.attributes["model"] for s in spans} == {"fake-judge"}
        if stage == "lens":  # four questions per judged example, 3 synthetic + 3 real
            (judging,) = traces
            assert judging.info.tags["mlflow.traceName"] == "llm.score"
            assert len(spans) == 4 * 6
            assert all(s.outputs["answer"] == "likely" for s in spans)
            for span in spans:  # the server's usage, once per call
                called = not span.attributes["cache_hit"] and "duplicate_of" not in span.attributes
                assert span.attributes["prompt_tokens"] == (11 if called else 0)
        else:  # the rubric's three lists
            assert {t.info.tags["mlflow.traceName"] for t in traces} == {"llm.complete"}
    # the fake's rubrics are alike, so set1's real examples are judged from set0's answers
    second = requests_of(traces_of(experiment, children["lens", "set1"].info.run_id)[0])
    assert sum(s.attributes["cache_hit"] for s in second) == 4 * 3

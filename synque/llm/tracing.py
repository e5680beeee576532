"""MLflow traces of LLM calls: what a judge was asked and what it answered, in the run that asked.

Why: a LENS value or a compiled rubric is only as good as the answers behind it, and the
metrics (`llm_calls`, `llm_invalid_answers` ...) say how many answers there were, not what
they were. A trace lets a user open a candidate set's run in the MLflow UI (Traces tab, or
`mlflow.search_traces(locations=[experiment_id], run_id=...)`) and read the prompts, the
replies or Likert probabilities, which answers came from the cache, and how long each took.

Shape: one trace per LLM batch (one `complete` or `score_choices_batch` call), attached to
the run active when the batch started (trace metadata `mlflow.sourceRun`, the run's
experiment). Its root span `llm.<op>` sums the batch up (requests, cache hits, calls,
invalid answers); below it, one span per recorded request: inputs = the messages (image
parts by digest and size, never a path or pixels) with the choices and sampling parameters;
outputs = the reply text, or the probability of each choice and the most probable one;
attributes `cache_hit`, `latency_s`, `prompt_tokens`, `completion_tokens`, `backend`,
`model`, `position` (in the batch), and `invalid` (why an answer was unusable) where set.

`latency_s` of a computed answer is the time since the backend's previous result in the
batch (or since the calls began): the whole call for a sequential backend, one result's
share for a batched or concurrent one (the base class does not see when a backend sent
each request). Of a cached answer: the cache lookup. Tokens are those this request spent
(0 for a cache hit; 0 where a backend does not count them).

Why one trace per batch, built in memory and written at once (two store calls: the trace
info, then every span): measured on a sqlite store with MLflow 3.17.2, MLflow's live span
API (`mlflow.start_span*`) commits every span on its own (~13 ms a span) and every trace
costs a `start_trace` (~35 ms), so one trace per call would add ~50-90 ms to each 20 ms
judgment. Written at once, a trace costs ~35 ms plus ~1.5 ms per recorded span
(bench/bench_traces.py: 1,000 judgments of 20 ms, +1% wall time with `sample`, +7% with
`all`). Nothing is written while the backend works: `done()` notes the time and the
result, and the trace is written when the batch ends (or fails). Writing never fails a
job: an error is logged. Spans do not carry MLflow's `mlflow.llm.model` attribute: with it
and token usage the store prices every span from a model catalog it downloads.

Settings (`tracking.*`, outside every config hash: traces do not change results):
`traces` is `all` (every request), `sample` (default) or `none`; with `sample`, at most
`trace_sample` requests are recorded per run: its first `trace_first` requests, then a
seeded uniform pick of each batch's rest while the run's allowance lasts. The pick depends
only on positions and batch size, so two judges of the same candidate set show the same
examples side by side, and a rerun records the same requests (now as cache hits).

MLflow's own tracing (autologging, the OTel span processor and its asynchronous exporter)
is switched off in stage processes by :func:`stage_tracer`: synque writes its traces itself,
synchronously, to the run's store, so a killed job leaves at most one batch's trace
unwritten (or a trace without spans, if killed between the two writes), never a queue.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Span, SpanType, TraceInfo, TraceLocation, TraceState
from mlflow.tracing.constant import (
    TRACE_SCHEMA_VERSION,
    TRACE_SCHEMA_VERSION_KEY,
    SpanAttributeKey,
    TraceMetadataKey,
    TraceTagKey,
)

from synque import SynqueError

if TYPE_CHECKING:
    from synque.llm.base import LLM

log = logging.getLogger(__name__)

MODES = ("all", "sample", "none")
DEFAULT_MODE = "sample"
#: Requests recorded per run with `sample`: ~0.3 MB of store per run for judge prompts of
#: ~5 kB (bench/bench_traces.py), whatever the number of calls (`all`: ~5.6 MB per 1,000).
DEFAULT_SAMPLE = 50
#: Of those, the run's first requests (why: the first answers are where a broken prompt or
#: an unreadable judge shows; the rest is a uniform pick).
DEFAULT_FIRST = 10
#: Characters of a trace's request/response preview (the trace list's columns).
PREVIEW_CHARS = 1000

#: `describe(i)`: the inputs of request i as a span shows them (called for recorded ones only).
Describe = Callable[[int], dict[str, Any]]


@dataclass
class Tracer:
    """What to record (`mode`, `sample`, `first`), and how much each run has recorded.

    A stage sets one on its LLM (`llm.tracer = stage_tracer(cfg)`); the LLM asks `start`
    at the beginning of every batch.
    """

    mode: str = DEFAULT_MODE
    sample: int = DEFAULT_SAMPLE
    first: int = DEFAULT_FIRST
    seed: int = 0
    _seen: dict[str, int] = field(default_factory=dict, repr=False)  # requests per run
    _kept: dict[str, int] = field(default_factory=dict, repr=False)  # recorded per run

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SynqueError(
                f"tracking.traces must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if int(self.sample) < 0 or int(self.first) < 0:
            raise SynqueError(
                "tracking.trace_sample and tracking.trace_first must be >= 0, got "
                f"{self.sample} and {self.first}"
            )
        self.sample, self.first = int(self.sample), min(int(self.first), int(self.sample))

    @classmethod
    def from_config(cls, tracking: Mapping[str, Any] | None) -> Tracer | None:
        """The tracer `tracking.traces/trace_sample/trace_first` ask for (None for `none`)."""
        tracking = tracking or {}
        tracer = cls(
            mode=str(tracking.get("traces", DEFAULT_MODE)),
            sample=tracking.get("trace_sample", DEFAULT_SAMPLE),
            first=tracking.get("trace_first", DEFAULT_FIRST),
        )
        return None if tracer.mode == "none" else tracer

    def positions(self, run_id: str, n: int) -> list[int]:
        """Positions of a batch of `n` requests to record in run `run_id` (and count them)."""
        seen = self._seen.get(run_id, 0)
        self._seen[run_id] = seen + n
        if self.mode == "all":
            return list(range(n))
        kept = self._kept.get(run_id, 0)
        allowance = self.sample - kept
        if allowance <= 0:
            return []
        head = min(n, max(0, self.first - seen), allowance)
        room = min(allowance - head, n - head)
        pick = random.Random(f"{self.seed}:{n}").sample(range(head, n), room) if room else []
        chosen = [*range(head), *sorted(pick)]
        self._kept[run_id] = kept + len(chosen)
        return chosen

    def start(self, llm: LLM, op: str, n: int, describe: Describe) -> BatchTrace | None:
        """A recorder for one batch in the active run (None when nothing is to be recorded)."""
        run = mlflow.active_run()
        if run is None or n == 0:
            return None  # a trace needs a run to belong to
        chosen = self.positions(run.info.run_id, n)
        if not chosen:
            return None
        return BatchTrace(llm, op, n, describe, chosen, run.info.run_id, run.info.experiment_id)


def stage_tracer(cfg: Any) -> Tracer | None:
    """The tracer of a stage's `tracking` settings; switches MLflow's own tracing off.

    Why off: synque writes its traces itself (see the module doc); MLflow's span processor
    would add traces of any autologged library call, written by a background exporter that
    a killed job leaves half done.
    """
    import mlflow.tracing

    mlflow.tracing.disable()
    tracking = cfg.get("tracking") if hasattr(cfg, "get") else None
    return Tracer.from_config(tracking)


@dataclass
class _Record:
    """One recorded request: when it began and ended (perf_counter seconds), its answer."""

    start: float
    end: float
    result: Any
    cache_hit: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    invalid: str | None = None
    duplicate_of: int | None = None


class BatchTrace:
    """Notes the recorded requests of one batch as results come; writes the trace at `close`.

    The hooks (`cached`, `calls_begin`, `done`) only read a clock and keep references, so
    the backend's loop is not slowed; spans are built and written in `close`.
    """

    def __init__(
        self,
        llm: LLM,
        op: str,
        n: int,
        describe: Describe,
        chosen: Sequence[int],
        run_id: str,
        experiment_id: str,
    ) -> None:
        self.llm, self.op, self.n, self.describe = llm, op, n, describe
        self.chosen = set(chosen)
        self.run_id, self.experiment_id = run_id, experiment_id
        self.records: dict[int, _Record] = {}
        self.hits = self.calls = self.invalid = 0
        self._lock = threading.Lock()
        self._wall_ns, self._t0 = time.time_ns(), time.perf_counter()
        self._last = self._t0
        self._tokens = self._token_counts()

    # -- hooks (cheap)
    def cached(self, i: int, value: Any, seconds: float) -> None:
        """Position i was answered from the cache; the lookup took `seconds`."""
        self.hits += 1
        if i in self.chosen:
            now = time.perf_counter()
            self.records[i] = _Record(now - seconds, now, value, True)

    def calls_begin(self) -> None:
        """The lookups are over and the backend starts: latencies count from here."""
        with self._lock:
            self._last = time.perf_counter()
            self._tokens = self._token_counts()

    def done(self, positions: Sequence[int], result: Any, problem: str | None) -> None:
        """The backend answered `positions` (one key) with `result`; `problem`: why invalid."""
        now = time.perf_counter()
        with self._lock:
            start, self._last = self._last, now
            tokens = self._token_counts()
            spent = (tokens[0] - self._tokens[0], tokens[1] - self._tokens[1])
            self._tokens = tokens
            self.calls += 1
            self.invalid += problem is not None
            first = positions[0]
            for i in positions:
                if i in self.chosen:
                    own = i == first
                    self.records[i] = _Record(
                        start,
                        now,
                        result,
                        False,
                        spent[0] if own else 0,
                        spent[1] if own else 0,
                        problem,
                        None if own else first,
                    )

    def _token_counts(self) -> tuple[int, int]:
        stats = self.llm.stats
        return stats.prompt_tokens, stats.completion_tokens

    # -- writing
    def close(self, error: BaseException | None = None) -> None:
        """Build the spans and write the trace to the run's store (errors are only logged)."""
        try:
            self._write(error)
        except Exception as exc:  # a trace is a diagnostic: never fail the job over one
            log.warning("llm traces: the trace of a %s batch was not written: %s", self.op, exc)

    def _ns(self, t: float) -> int:
        return self._wall_ns + int((t - self._t0) * 1e9)

    def _write(self, error: BaseException | None) -> None:
        from mlflow.tracing.client import TracingClient

        end = time.perf_counter()
        otel_trace = secrets.randbits(128) or 1
        trace_id = f"tr-{otel_trace:032x}"
        root_id = _span_id()
        backend = {"backend": self.llm.kind, "model": self.llm.model}
        summary = {
            "requests": self.n,
            "cache_hits": self.hits,
            "calls": self.calls,
            "invalid_answers": self.invalid,
            "recorded": len(self.records),
        }
        inputs = {"op": self.op, "requests": self.n, **backend, "llm": self.llm.name}
        outputs = {**summary, **({"error": _error_line(error)} if error is not None else {})}
        spans = [
            _span(
                trace_id,
                otel_trace,
                root_id,
                None,
                f"llm.{self.op}",
                SpanType.CHAIN,
                (self._wall_ns, self._ns(end)),
                inputs,
                outputs,
                {**backend, "op": self.op, **summary},
                error,
            )
        ]
        for i in sorted(self.records):
            spans.append(self._request_span(trace_id, otel_trace, root_id, i, self.records[i]))
        info = TraceInfo(
            trace_id=trace_id,
            trace_location=TraceLocation.from_experiment_id(self.experiment_id),
            request_time=self._wall_ns // 1_000_000,
            execution_duration=int((end - self._t0) * 1000),
            state=TraceState.ERROR if error is not None else TraceState.OK,
            request_preview=_dumps(inputs)[:PREVIEW_CHARS],
            response_preview=_dumps(outputs)[:PREVIEW_CHARS],
            trace_metadata={
                TraceMetadataKey.SOURCE_RUN: self.run_id,
                TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION),
            },
            tags={
                TraceTagKey.TRACE_NAME: f"llm.{self.op}",
                "synque.llm.op": self.op,
                "synque.llm.backend": self.llm.kind,
                "synque.llm.model": self.llm.model,
            },
        )
        client = TracingClient(mlflow.get_tracking_uri())
        client.start_trace(info)
        client.log_spans(self.experiment_id, spans)

    def _request_span(
        self, trace_id: str, otel_trace: int, root_id: int, i: int, rec: _Record
    ) -> Span:
        inputs = self.describe(i)
        if self.op == "score":
            choices = list(inputs.get("choices") or [])
            probs = [float(p) for p in rec.result]
            best = max(range(len(probs)), key=probs.__getitem__) if probs else None
            outputs: dict[str, Any] = {
                "answer": choices[best] if best is not None and best < len(choices) else best,
                "probs": dict(zip(choices, probs, strict=False)) if choices else probs,
            }
        else:
            outputs = {"text": getattr(rec.result, "text", rec.result)}
        attributes: dict[str, Any] = {
            "cache_hit": rec.cache_hit,
            "latency_s": round(rec.end - rec.start, 6),
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
            "backend": self.llm.kind,
            "model": self.llm.model,
            "op": self.op,
            "position": i,
        }
        # not MLflow's `mlflow.llm.model`: with it and token usage, the store prices each span
        # from a model catalog it downloads (GitHub): network calls on every write, and no
        # price for a local model anyway
        if rec.prompt_tokens or rec.completion_tokens:
            attributes[SpanAttributeKey.CHAT_USAGE] = {
                "input_tokens": rec.prompt_tokens,
                "output_tokens": rec.completion_tokens,
                "total_tokens": rec.prompt_tokens + rec.completion_tokens,
            }
        if rec.invalid is not None:
            attributes["invalid"] = rec.invalid
        if rec.duplicate_of is not None:
            attributes["duplicate_of"] = rec.duplicate_of
        return _span(
            trace_id,
            otel_trace,
            _span_id(),
            root_id,
            f"{self.op} {i}",
            SpanType.CHAT_MODEL,
            (self._ns(rec.start), self._ns(rec.end)),
            inputs,
            outputs,
            attributes,
            None,
        )


def _span_id() -> int:
    return secrets.randbits(64) or 1


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _span(
    trace_id: str,
    otel_trace: int,
    span_id: int,
    parent_id: int | None,
    name: str,
    span_type: str,
    times: tuple[int, int],
    inputs: Any,
    outputs: Any,
    attributes: Mapping[str, Any],
    error: BaseException | None,
) -> Span:
    """A finished span in MLflow's serialized span format (attribute values JSON-encoded).

    Why the dict format: it is the one MLflow stores and reads back (`Span.from_dict`), so a
    span built here is exactly what a live span would have become, without its per-span
    store commit.
    """
    encoded = {
        SpanAttributeKey.REQUEST_ID: trace_id,
        SpanAttributeKey.SPAN_TYPE: span_type,
        SpanAttributeKey.INPUTS: inputs,
        SpanAttributeKey.OUTPUTS: outputs,
        **attributes,
    }
    return Span.from_dict(
        {
            "trace_id": _b64(otel_trace, 16),
            "span_id": _b64(span_id, 8),
            "parent_span_id": _b64(parent_id, 8) if parent_id is not None else None,
            "name": name,
            "start_time_unix_nano": times[0],
            "end_time_unix_nano": max(times),
            "events": [],
            "status": {
                "code": "STATUS_CODE_ERROR" if error is not None else "STATUS_CODE_OK",
                "message": _error_line(error) if error is not None else "",
            },
            "attributes": {k: _dumps(v) for k, v in encoded.items()},
        }
    )


def _b64(value: int, size: int) -> str:
    import base64

    return base64.b64encode(value.to_bytes(size, "big")).decode("ascii")

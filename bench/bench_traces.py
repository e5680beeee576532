"""What recording LLM traces costs a judging run: wall time and store size (not a test).

Why: traces must stay cheap enough to leave on (`tracking.traces: sample`, the default)
and small enough not to bloat the tracking store. Times `judge_examples` over 1,000 judge
calls (250 examples x 4 questions) with `tracking.traces` none / sample / all, each in a
run of its own against a sqlite store in a temporary folder, with two fake judges: an
instant one (the worst case for the relative overhead) and one that sleeps `--delay-ms`
per call (a real judge takes >= 20 ms). Prints wall time, overhead against `none` with
the same judge, the traces and spans written and the store's growth per 1,000 calls.

    python bench/bench_traces.py [--calls 1000] [--delay-ms 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402

from synque.lens import Rubric, judge_examples, load_prompts  # noqa: E402
from synque.llm import LLM, Message  # noqa: E402
from synque.llm.base import OnScore  # noqa: E402
from synque.llm.tracing import Tracer  # noqa: E402

SETTINGS = ("none", "sample", "all")
# Rubric points of realistic length (a judge prompt of ~1,000 tokens, ~4 kB).
POINT = (
    "Texts of this kind usually name a product or a place, give a figure such as a price or "
    "a date, and keep a neutral, factual tone without exclamation marks {}."
)
RUBRIC = Rubric(
    sims=[POINT.format(f"(similarity {i})") for i in range(10)],
    diffs_synth_from_real=[POINT.format(f"(synthetic trait {i})") for i in range(10)],
    diffs_real_from_synth=[POINT.format(f"(real trait {i})") for i in range(10)],
)


class FakeJudge(LLM):
    """Scores every prompt "likely"; sleeps `delay` seconds per call like a real judge."""

    kind = "fake"

    def __init__(self, delay: float) -> None:
        super().__init__("fake-judge")
        self.delay = delay

    def _score(self, items: list[list[Message]], choices: list[str], done: OnScore) -> None:
        for j, _ in enumerate(items):
            if self.delay:
                time.sleep(self.delay)
            probs = [0.05] * len(choices)
            probs[len(choices) // 2 + 1] = 1 - 0.05 * (len(choices) - 1)
            done(j, probs)


def store_bytes(folder: Path) -> int:
    """Bytes of the sqlite store (with its journal files)."""
    return sum(p.stat().st_size for p in folder.glob("mlflow.db*"))


def measure(
    experiment: str, folder: Path, setting: str, delay: float, calls: int
) -> dict[str, float]:
    """One judging run of `calls` calls: wall seconds, traces, spans, store growth."""
    n = calls // 8  # per set; 4 questions per example, two sets
    synth = [f"Synthetic listing {i}: a blue kettle for 25 euros, sold in Lyon." for i in range(n)]
    real = [f"Real listing {i}: an old radio for 10 euros, found in Porto." for i in range(n)]
    llm = FakeJudge(delay)
    llm.tracer = Tracer.from_config({"traces": setting})
    prompts = load_prompts("default")
    before = store_bytes(folder)
    with mlflow.start_run(experiment_id=experiment) as run:
        start = time.perf_counter()
        judge_examples(llm, RUBRIC, prompts, synth, real, progress=False)
        seconds = time.perf_counter() - start
    found = mlflow.search_traces(locations=[experiment], run_id=run.info.run_id, return_type="list")
    return {
        "seconds": seconds,
        "calls": llm.stats.calls,
        "traces": len(found),
        "spans": sum(len(t.data.spans) for t in found),
        "bytes": store_bytes(folder) - before,
    }


def bench(calls: int, delays: list[float], repeats: int) -> list[tuple[str, ...]]:
    mlflow.tracing.disable()  # as the stages do: only synque's own traces
    rows = []
    with tempfile.TemporaryDirectory(prefix="synque-traces-") as tmp:
        folder = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        experiment = mlflow.create_experiment("bench", artifact_location=(folder / "a").as_uri())
        measure(experiment, folder, "all", 0.0, 8)  # warm-up: imports, first writes
        for delay in delays:
            results: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
            for _ in range(repeats):  # interleaved, so a busy moment hits every setting
                for setting in SETTINGS:
                    results[setting].append(measure(experiment, folder, setting, delay, calls))
            base = statistics.median(r["seconds"] for r in results["none"])
            for setting in SETTINGS:
                runs = results[setting]
                median: Callable[[str], float] = lambda k, runs=runs: statistics.median(  # noqa: E731
                    r[k] for r in runs
                )
                seconds = median("seconds")
                per_1000 = median("bytes") / max(1.0, median("calls")) * 1000
                rows.append(
                    (
                        f"{delay * 1000:.0f} ms/call",
                        setting,
                        f"{seconds:.2f}",
                        f"{(seconds / base - 1) * 100:+.1f}%",
                        f"{median('calls'):.0f}",
                        f"{median('traces'):.0f}",
                        f"{median('spans'):.0f}",
                        f"{per_1000 / 1024:.0f}",
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="judge calls per run")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the slow judge's call")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting (median)")
    args = parser.parse_args()
    rows = bench(args.calls, [0.0, args.delay_ms / 1000], args.repeats)
    head = ("judge", "traces", "wall s", "overhead", "calls", "traces", "spans", "kB/1000")
    widths = [12, 7, 8, 9, 6, 7, 6, 8]
    load = os.getloadavg()[0]
    print(f"\njudge_examples, sqlite store, median of {args.repeats} (load avg {load:.1f})")
    for row in (head, *rows):
        print("  ".join(f"{cell:>{w}}" for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()

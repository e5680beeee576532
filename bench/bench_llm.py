"""Judge throughput of the LLM backends on this machine (not a test).

Why: LENS asks four questions per example for every synthetic and real example, so
judgments per second decide whether a LENS run takes minutes or days. Prints judgments/s
for the local backend: batched choice scoring (many prompts per forward pass, the default)
next to one prompt at a time (the previous path) in the same run, alternated `--repeats`
times (best kept), without prefix KV reuse, and in generate mode; with ``--server-url``,
for an OpenAI-compatible server (e.g. launch/llama_cpp_server.sh) in choices and generate
mode. No response cache is used, so every judgment is computed. Besides wall seconds it
prints CPU seconds of this process (judgments per CPU-second hardly move when other jobs
load the machine) and the load average before and after.

    python bench/bench_llm.py [--examples 4] [--threads 2] [--server-url http://127.0.0.1:8080/v1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from synque.lens import Rubric, judge_examples, load_prompts  # noqa: E402
from synque.llm import LLM, LocalLLM, build_llm  # noqa: E402

# Made-up headlines and rubric points of realistic length (a ~900-token judge prompt).
SYNTH = [
    "Tech giant beats quarterly estimates as cloud revenue climbs 18%",
    "Oil slides 3% as traders weigh weaker demand outlook",
    "Regional lender shares sink after surprise loss provision",
    "Chipmaker guides above consensus on strong data-center orders",
    "Retailer cuts full-year forecast citing cautious shoppers",
    "Airline stock jumps on record summer bookings",
    "Automaker recalls 40,000 vehicles over faulty brake sensors",
    "Bank shares rally as central bank signals a pause in rate hikes",
]
REAL = [
    "$XYZ -4% premarket after downgrade to neutral at a large bank",
    "Futures flat ahead of payrolls; yields edge up",
    "ABC Corp Q2 EPS $1.12 vs $1.05 est., revenue in line",
    "Analyst lifts price target on EV maker to $310 from $275",
    "Gold hits two-week high as dollar eases",
    "Drugmaker wins FDA nod for late-stage asthma therapy",
    "$ABC halted pending news; last +12%",
    "Copper slips on weak China factory data, LME stocks rise",
]
POINT = (
    "Headlines of this kind usually name a listed company or a market, give a figure "
    "such as a percentage move or an earnings number, and keep a neutral news tone {}."
)


def make_rubric(points: int) -> Rubric:
    """`points` made-up points per list (10: the ~900-token prompt; 4: the quickstart's)."""
    return Rubric(
        sims=[POINT.format(f"(similarity {i})") for i in range(points)],
        diffs_synth_from_real=[POINT.format(f"(synthetic trait {i})") for i in range(points)],
        diffs_real_from_synth=[POINT.format(f"(real trait {i})") for i in range(points)],
    )


Row = tuple[str, float, float, float]  # label, wall seconds, judgments/s, judgments/CPU-s


def timed(label: str, n: int, run: Callable[[], object]) -> Row:
    """(label, seconds, judgments/s, judgments per CPU-second) for ``n`` judgments."""
    start, cpu = time.perf_counter(), time.process_time()
    run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return label, seconds, n / seconds, n / cpu if cpu > 0 else float("nan")


def best(rows: list[Row]) -> Row:
    """The fastest of repeated runs (the one least slowed by other jobs)."""
    return max(rows, key=lambda row: row[2])


def bench_local(n: int, repeats: int, generate: bool, rubric: Rubric) -> list[Row]:
    prompts = load_prompts("sentiment")
    synth, real = SYNTH[:n], REAL[:n]
    judgments = 4 * (len(synth) + len(real))
    start = time.perf_counter()
    llm = LocalLLM("smollm2", cache=None)
    rows: list[Row] = [
        ("local: load SmolLM2-135M (GGUF)", time.perf_counter() - start, *(float("nan"),) * 2)
    ]
    tokens = len(
        llm.encode_prompt([{"role": "user", "content": rubric.to_json()}])
    )  # rough size of the rubric
    print(
        f"local backend on {llm.device}; rubric ~{tokens} tokens; {torch.get_num_threads()} threads"
    )
    judge_examples(llm, rubric, prompts, synth[:1], real[:1], progress=False)  # warm-up
    batched = llm.score_batch_tokens
    runs: dict[int, list[Row]] = {0: [], batched: []}
    for _ in range(repeats):  # alternated, so both see the same load
        for budget in runs:
            llm.score_batch_tokens = budget
            label = (
                f"local choices, batched ({budget} tokens/pass)"
                if budget
                else "local choices, one prompt at a time"
            )
            runs[budget].append(
                timed(
                    label,
                    judgments,
                    lambda: judge_examples(llm, rubric, prompts, synth, real, progress=False),
                )
            )
    rows += [best(runs[0]), best(runs[batched])]
    llm.score_batch_tokens = batched
    if not generate:
        return rows
    llm.prefix_reuse = False
    rows.append(
        timed(
            "local choices, prefix_reuse=False",
            judgments,
            lambda: judge_examples(llm, rubric, prompts, synth, real, progress=False),
        )
    )
    llm.prefix_reuse = True
    rows.append(
        timed(
            "local generate (max 16 tokens)",
            judgments,
            lambda: judge_examples(
                llm, rubric, prompts, synth, real, mode="generate", progress=False
            ),
        )
    )
    return rows


def bench_server(url: str, model: str, structured: str, n: int, rubric: Rubric) -> list[Row]:
    prompts = load_prompts("sentiment")
    synth, real = SYNTH[:n], REAL[:n]
    judgments = 4 * (len(synth) + len(real))
    rows = []
    for mode in ("choices", "generate"):
        llm: LLM = build_llm(
            {
                "kind": "openai",
                "model": model,
                "base_url": url,
                "structured_output": structured,
                "max_concurrency": 2,
            },
            None,
        )
        rows.append(
            timed(
                f"openai {mode} @ {url}",
                judgments,
                lambda llm=llm, mode=mode: judge_examples(
                    llm, rubric, prompts, synth, real, mode=mode, progress=False
                ),
            )
        )
        print(f"  {mode}: {llm.metrics()}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4, help="examples per set (max 8)")
    parser.add_argument("--points", type=int, default=10, help="rubric points per list")
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs per path")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--no-generate", action="store_true", help="skip prefix_reuse=False and generate mode"
    )
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--server-url", default=None)
    parser.add_argument("--server-model", default="smollm2")
    parser.add_argument("--structured-output", default="json_object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rubric = make_rubric(args.points)
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    if not args.no_local:
        rows += bench_local(args.examples, max(1, args.repeats), not args.no_generate, rubric)
    if args.server_url:
        rows += bench_server(
            args.server_url, args.server_model, args.structured_output, args.examples, rubric
        )
    load = os.getloadavg()[0]
    print(
        f"\n{'backend':<48} {'seconds':>8} {'judgments/s':>12} {'per CPU-s':>10}   "
        f"(load avg {load_before:.1f} before, {load:.1f} after; {os.cpu_count()} CPUs)"
    )
    for label, seconds, rate, per_cpu in rows:
        print(f"{label:<48} {seconds:>8.1f} {rate:>12.2f} {per_cpu:>10.2f}")


if __name__ == "__main__":
    main()

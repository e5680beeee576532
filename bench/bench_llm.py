"""Judge throughput of the LLM backends on this machine (not a test).

Why: LENS asks four questions per example for every synthetic and real example, so
judgments per second decide whether a LENS run takes minutes or days. Prints judgments/s
for the local backend with and without prefix KV reuse and, with ``--server-url``, for an
OpenAI-compatible server (e.g. launch/llama_cpp_server.sh) in choices and generate mode.
No response cache is used, so every judgment is computed.

    python bench/bench_llm.py [--examples 4] [--server-url http://127.0.0.1:8080/v1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
]
REAL = [
    "$XYZ -4% premarket after downgrade to neutral at a large bank",
    "Futures flat ahead of payrolls; yields edge up",
    "ABC Corp Q2 EPS $1.12 vs $1.05 est., revenue in line",
    "Analyst lifts price target on EV maker to $310 from $275",
    "Gold hits two-week high as dollar eases",
    "Drugmaker wins FDA nod for late-stage asthma therapy",
]
POINT = (
    "Headlines of this kind usually name a listed company or a market, give a figure "
    "such as a percentage move or an earnings number, and keep a neutral news tone {}."
)
RUBRIC = Rubric(
    sims=[POINT.format(f"(similarity {i})") for i in range(10)],
    diffs_synth_from_real=[POINT.format(f"(synthetic trait {i})") for i in range(10)],
    diffs_real_from_synth=[POINT.format(f"(real trait {i})") for i in range(10)],
)


def timed(label: str, n: int, run: Callable[[], object]) -> tuple[str, float, float]:
    """(label, seconds, judgments/s) for ``n`` judgments."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return label, seconds, n / seconds


def bench_local(n: int) -> list[tuple[str, float, float]]:
    prompts = load_prompts("sentiment")
    synth, real = SYNTH[:n], REAL[:n]
    judgments = 4 * (len(synth) + len(real))
    start = time.perf_counter()
    llm = LocalLLM("smollm2", cache=None)
    rows = [("local: load SmolLM2-135M (GGUF)", time.perf_counter() - start, float("nan"))]
    tokens = len(
        llm.encode_prompt([{"role": "user", "content": RUBRIC.to_json()}])
    )  # rough size of the rubric
    print(f"local backend on {llm.device}; rubric ~{tokens} tokens")
    for reuse in (True, False):
        llm.prefix_reuse = reuse
        rows.append(
            timed(
                f"local choices, prefix_reuse={reuse}",
                judgments,
                lambda: judge_examples(llm, RUBRIC, prompts, synth, real, progress=False),
            )
        )
    llm.prefix_reuse = True
    rows.append(
        timed(
            "local generate (max 16 tokens)",
            judgments,
            lambda: judge_examples(
                llm, RUBRIC, prompts, synth, real, mode="generate", progress=False
            ),
        )
    )
    return rows


def bench_server(url: str, model: str, structured: str, n: int) -> list[tuple[str, float, float]]:
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
                    llm, RUBRIC, prompts, synth, real, mode=mode, progress=False
                ),
            )
        )
        print(f"  {mode}: {llm.metrics()}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4, help="examples per set (max 6)")
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--server-url", default=None)
    parser.add_argument("--server-model", default="smollm2")
    parser.add_argument("--structured-output", default="json_object")
    args = parser.parse_args()
    rows = []
    if not args.no_local:
        rows += bench_local(args.examples)
    if args.server_url:
        rows += bench_server(
            args.server_url, args.server_model, args.structured_output, args.examples
        )
    load = os.getloadavg()[0]
    print(
        f"\n{'backend':<48} {'seconds':>8} {'judgments/s':>12}   (load avg {load:.1f}, "
        f"{os.cpu_count()} CPUs)"
    )
    for label, seconds, rate in rows:
        print(f"{label:<48} {seconds:>8.1f} {rate:>12.2f}")


if __name__ == "__main__":
    main()

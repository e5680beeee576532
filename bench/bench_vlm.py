"""Image judging throughput on this machine (not a test): local VLM and an OpenAI server.

Why: LENS on images asks four questions per image for every synthetic and real image; this
prints, side by side, judgments per second of the `local` backend with and without prefix
reuse (the second question about an image reuses rubric and image) and, for the `openai`
path, requests and bytes sent per judgment against a real `transformers serve`.

The default model is the tests' tiny RANDOM Idefics3 (SmolVLM architecture, ~6M
parameters): its figures measure synque's overhead around a model (processor, image
tokens, KV reuse, HTTP and base64), not a real VLM. `--model DIR` benchmarks a real one.
No response cache is used: every judgment is computed.

    python bench/bench_vlm.py [--images 8] [--size 224] [--model DIR] [--no-server]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synque.lens import Rubric, judge_examples, load_prompts  # noqa: E402
from synque.llm import LLM, LocalLLM, OpenAILLM, image_part  # noqa: E402
from tests.fakes.images import draw  # noqa: E402
from tests.fakes.vlm import build_tiny_vlm, serve_vlm  # noqa: E402

POINT = "Photos of this kind show one object {}, centred, in daylight, on a busy background."
RUBRIC = Rubric(
    sims=[POINT.format(f"(shared trait {i})") for i in range(10)],
    diffs_synth_from_real=[POINT.format(f"(synthetic trait {i})") for i in range(10)],
    diffs_real_from_synth=[POINT.format(f"(real trait {i})") for i in range(10)],
)
Row = tuple[str, float, int, float, float]  # label, seconds, judgments, judgments/s, bytes/j


def images(folder: Path, n: int, size: int) -> tuple[list[dict], list[dict]]:
    """`n` synthetic and `n` real image parts of `size` px (distinct bytes each)."""
    parts = []
    for i in range(2 * n):
        path = folder / f"{i}.png"
        draw(i % 5, i, size=size).save(path)
        parts.append(image_part(path))
    return parts[:n], parts[n:]


def judge(label: str, llm: LLM, synth: list[dict], real: list[dict]) -> Row:
    prompts = load_prompts("images")
    start = time.perf_counter()
    judge_examples(llm, RUBRIC, prompts, synth, real, progress=False)
    seconds = time.perf_counter() - start
    n = 4 * (len(synth) + len(real))
    return label, seconds, n, n / seconds, llm.stats.request_bytes / n


def bench_local(model: str, synth: list[dict], real: list[dict]) -> list[Row]:
    rows = []
    for reuse in (True, False):
        llm = LocalLLM(model, cache=None, threads=1, prefix_reuse=reuse)
        judge(f"local, prefix_reuse={reuse} (warm-up)", llm, synth[:1], real[:1])
        llm.stats.request_bytes = 0
        rows.append(judge(f"local, prefix_reuse={reuse}", llm, synth, real))
        print(f"  prefix_reuse={reuse}: {llm.reused_tokens} prompt tokens served from reuse")
    return rows


def bench_server(model: Path, synth: list[dict], real: list[dict]) -> list[Row]:
    with serve_vlm(model) as server:
        llm = OpenAILLM(server.model, None, base_url=server.base_url, max_concurrency=2)
        row = judge("openai (transformers serve)", llm, synth, real)
        requests = llm.stats.calls + llm.stats.retries
        print(
            f"  openai: {requests} requests for {row[2]} judgments "
            f"({requests / row[2]:.2f} per judgment), {llm.stats.request_bytes / 1e6:.2f} MB sent"
        )
        return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="synthetic and real images each")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--model", default=None, help="a VLM folder (default: the tiny one)")
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-vlm-") as tmp:
        folder = Path(tmp)
        model = Path(args.model) if args.model else build_tiny_vlm(folder / "tiny-vlm")
        (folder / "images").mkdir()
        synth, real = images(folder / "images", args.images, args.size)
        rows = bench_local(str(model), synth, real)
        if not args.no_server:
            rows += bench_server(model, synth, real)
    load = os.getloadavg()[0]
    print(
        f"\n{args.images}+{args.images} images of {args.size} px, 4 judgments each, model "
        f"{'tiny random VLM' if not args.model else args.model} (load avg {load:.1f}, "
        f"{os.cpu_count()} CPUs)"
    )
    print(f"{'backend':<36} {'seconds':>8} {'judgments':>10} {'judg/s':>8} {'bytes/judg':>11}")
    for label, seconds, n, rate, size in rows:
        print(f"{label:<36} {seconds:>8.2f} {n:>10} {rate:>8.1f} {size:>11.0f}")


if __name__ == "__main__":
    main()

"""Benchmark: loading the packaged SmolLM2 GGUF, first time (de-quantise and convert) and
after (the converted folder), each in a fresh process as a synque job would.

Why: every process that judges, generates or fine-tunes with the local backend loads the
model; this prints what that costs before and after the conversion exists.

    python bench/bench_model_load.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import time
t0 = time.perf_counter()
import torch, transformers  # noqa: F401  (imports timed apart from the load)
t1 = time.perf_counter()
from synque.llm.local import LocalLLM
LocalLLM("smollm2", cache=None)
print(f"{t1 - t0:.2f} {time.perf_counter() - t1:.2f}")
"""


def load_once(env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    imports, load = out.stdout.split()[-2:]
    return float(imports), float(load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="loads after the first")
    opts = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "SYNQUE_MODEL_CACHE": str(Path(tmp) / "models"),
            "PYTHONPATH": str(root),
        }
        rows = [("GGUF file (first load: de-quantise, convert)", *load_once(env))]
        rows += [("converted folder", *load_once(env)) for _ in range(opts.repeats)]
        off = {**env, "SYNQUE_MODEL_CACHE": "off"}
        rows.append(("GGUF file, conversion off (before this change)", *load_once(off)))
    print(f"load average {os.getloadavg()[0]:.1f}, torch threads: default")
    print(f"{'load from':<48} {'imports s':>9} {'model s':>8}")
    for name, imports, load in rows:
        print(f"{name:<48} {imports:9.2f} {load:8.2f}")


if __name__ == "__main__":
    main()

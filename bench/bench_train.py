"""Seconds per candidate set of `train.source=trained`, for both modes (not a test).

Trains on one released synthetic sentiment set (first --n-train examples) and tests on the
first --n-test examples of the real validation set, with configs/train/{classifier,probe}.yaml,
so the cost of ranking a task's candidate sets by trained performance can be planned.

    SYNQUE_DATA=/path/to/synque-data python bench/bench_train.py

On a CPU shared with other jobs, OpenMP's default spin-waiting can make fine-tuning several
times slower; OMP_WAIT_POLICY=PASSIVE (set before Python starts) avoids that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from synque.classifier import train_text_classifier  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = "sentiment_analysis"
SYNTHETIC = "synthetic_data/qwen2.5-7b_zero-shot_v1.json"
REAL = "real_data/cleaned_ds_validation.json"


def load(path: Path, limit: int) -> tuple[list[str], list[str]]:
    """Headlines and sentiment labels (as strings: synthetic and real files differ in type)."""
    records = json.loads(path.read_text())[:limit]
    return [r["headline"] for r in records], [str(r["sentiment"]) for r in records]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=999)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--modes", nargs="+", default=["probe", "classifier"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    data = Path(os.environ.get("SYNQUE_DATA", ROOT.parent / "shared" / "synque-data")) / SENTIMENT
    if not data.is_dir():
        print(f"no released data at {data}: set SYNQUE_DATA", file=sys.stderr)
        return 1
    train_x, train_y = load(data / SYNTHETIC, args.n_train)
    test_x, test_y = load(data / REAL, args.n_test)
    print(
        f"train {len(train_x)} synthetic ({SYNTHETIC}), test {len(test_x)} real; "
        f"torch threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}"
    )
    print(f"{'config':<11} {'mode':<9} {'seconds':>8} {'epochs':>6} {'f1_macro':>8} {'acc':>6}")
    for name in args.modes:
        cfg = OmegaConf.load(ROOT / "configs" / "train" / f"{name}.yaml")
        result = train_text_classifier(
            train_x, train_y, test_x, test_y, cfg, seed=args.seed, progress=args.progress
        )
        print(
            f"{name:<11} {cfg.mode:<9} {result.seconds:8.1f} {result.epochs:6d} "
            f"{result.f1_macro:8.3f} {result.accuracy:6.3f}  "
            f"(n_train {result.n_train}, n_val {result.n_val}, best val F1 "
            f"{result.best_val_f1:.3f}, {result.device})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

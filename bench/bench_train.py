"""Seconds per candidate set of the `train` stage's trainers (not a test).

images (no data needed): 1,000 generated shape images at 32 px (tests/train/shapes.py), a
small CNN and ResNet-50 from scratch for a fixed number of epochs (min = max), alone with 1
and 2 torch threads, then two training jobs side by side (what a joblib sweep does) with 1
and 2 threads each, all printed in one table. text (needs SYNQUE_DATA): the fine-tuned and
probe text classifiers on one released sentiment set, tested on the real validation set.

    python bench/bench_train.py images [--n 1000 --size 32 --epochs 3 --archs small_cnn resnet50]
    SYNQUE_DATA=/path/to/synque-data python bench/bench_train.py text

On a CPU shared with other jobs, OpenMP's default spin-waiting can make training several
times slower; OMP_WAIT_POLICY=PASSIVE (set here and by `import synque`) avoids that.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.train.shapes draws the images
# before torch loads OpenMP (synque sets it too, but torch is imported first here)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import polars as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from synque.components import build  # noqa: E402
from synque.train.base import TrainResult  # noqa: E402

SENTIMENT = "sentiment_analysis"
SYNTHETIC = "synthetic_data/qwen2.5-7b_zero-shot_v1.json"
REAL = "real_data/cleaned_ds_validation.json"


def train_config(name: str, **overrides: Any) -> dict[str, Any]:
    """configs/train/<name>.yaml as the CLI composes it (defaults list applied), overridden."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"train={name}"])
    data = OmegaConf.to_container(cfg.train, resolve=True)
    assert isinstance(data, dict)
    return {**data, **overrides}


# --- images -------------------------------------------------------------------------------
def image_trainer(arch: str, threads: int, size: int, epochs: int) -> Any:
    return build(
        train_config(
            arch,
            image_size=size,
            min_epochs=epochs,
            max_epochs=epochs,
            threads=threads,
            accelerator="cpu",
        ),
        "train",
    )


def fit_seconds(arch: str, threads: int, data: Path, size: int, epochs: int) -> float:
    """Seconds of one candidate set, after an untimed one-epoch warm-up in this process (the
    first fit of a process pays one-off initialisation that a stage pays once per job)."""
    train = pl.read_parquet(data / "train.parquet")
    test = pl.read_parquet(data / "test.parquet")
    image_trainer(arch, threads, size, 1).fit_evaluate(train.head(40), test.head(10), 0)
    result: TrainResult = image_trainer(arch, threads, size, epochs).fit_evaluate(train, test, 0)
    return result.metrics["train_seconds"]


def _side_by_side_job(args: tuple, barrier: Any, out: Any) -> None:
    """One of two jobs started together: imports and setup first, then the timed fit."""
    barrier.wait()
    out.put(fit_seconds(*args))


def side_by_side(arch: str, threads: int, data: Path, size: int, epochs: int) -> list[float]:
    """Seconds of each of two identical jobs training at the same time (separate processes)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    work = (arch, threads, data, size, epochs)
    jobs = [ctx.Process(target=_side_by_side_job, args=(work, barrier, out)) for _ in range(2)]
    for job in jobs:
        job.start()
    seconds = [out.get() for _ in jobs]
    for job in jobs:
        job.join()
    return seconds


def bench_images(opts: argparse.Namespace) -> None:
    from tests.train.shapes import SHAPES, write_shapes

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = Path(tmp)
        write_shapes(data / "img" / "train", opts.n, SHAPES, opts.size, seed=0).write_parquet(
            data / "train.parquet"
        )
        write_shapes(data / "img" / "test", opts.n // 5, SHAPES, opts.size, seed=1).write_parquet(
            data / "test.parquet"
        )
        print(
            f"{opts.n} train / {opts.n // 5} test images of {len(SHAPES)} shapes at {opts.size} "
            f"px, {opts.epochs} epochs, CPU ({os.cpu_count()} cores visible); seconds per "
            "candidate set (fit + test, decoding included)"
        )
        columns = ["alone, 1 thread", "alone, 2 threads", "2 jobs x 1 thread", "2 jobs x 2 threads"]
        print(f"{'arch':<10}" + "".join(f"{c:>20}" for c in columns))
        for arch in opts.archs:
            alone = [fit_seconds(arch, t, data, opts.size, opts.epochs) for t in (1, 2)]
            # side by side: the mean of the two jobs' own seconds
            pairs = [sum(side_by_side(arch, t, data, opts.size, opts.epochs)) / 2 for t in (1, 2)]
            print(f"{arch:<10}" + "".join(f"{v:20.1f}" for v in (*alone, *pairs)))


# --- text ---------------------------------------------------------------------------------
def load_sentiment(path: Path, limit: int) -> pl.DataFrame:
    """Headlines and sentiment labels (as strings: synthetic and real files differ in type)."""
    records = json.loads(path.read_text())[:limit]
    return pl.DataFrame(
        {"text": [r["headline"] for r in records], "label": [str(r["sentiment"]) for r in records]}
    )


def bench_text(opts: argparse.Namespace) -> int:
    data = Path(os.environ.get("SYNQUE_DATA", ROOT.parent / "shared" / "synque-data")) / SENTIMENT
    if not data.is_dir():
        print(f"no released data at {data}: set SYNQUE_DATA", file=sys.stderr)
        return 1
    train = load_sentiment(data / SYNTHETIC, opts.n_train)
    test = load_sentiment(data / REAL, opts.n_test)
    print(
        f"train {train.height} synthetic ({SYNTHETIC}), test {test.height} real; "
        f"torch threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}"
    )
    print(f"{'config':<11} {'seconds':>8} {'epochs':>6} {'f1_macro':>8} {'acc':>6}")
    for name in opts.modes:
        trainer = build(train_config(name), "train", progress=opts.progress)
        result = trainer.fit_evaluate(train, test, seed=opts.seed)
        m, p = result.metrics, result.params
        print(
            f"{name:<11} {m['train_seconds']:8.1f} {int(m['epochs']):6d} {m['f1_macro']:8.3f} "
            f"{m['accuracy']:6.3f}  (n_train {p['n_train']}, n_val {p['n_val']}, best val F1 "
            f"{m['best_val_f1']:.3f}, {result.device})"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="part", required=True)
    images = parts.add_parser("images", help="image trainers, threads alone and side by side")
    images.add_argument("--n", type=int, default=1000)
    images.add_argument("--size", type=int, default=32)
    images.add_argument("--epochs", type=int, default=3)
    images.add_argument("--archs", nargs="+", default=["small_cnn", "resnet50"])
    text = parts.add_parser("text", help="text classifiers on a released sentiment set")
    text.add_argument("--n-train", type=int, default=999)
    text.add_argument("--n-test", type=int, default=500)
    text.add_argument("--modes", nargs="+", default=["probe", "classifier"])
    text.add_argument("--seed", type=int, default=42)
    text.add_argument("--progress", action="store_true")
    opts = parser.parse_args()
    if opts.part == "images":
        bench_images(opts)
        return 0
    return bench_text(opts)


if __name__ == "__main__":
    sys.exit(main())

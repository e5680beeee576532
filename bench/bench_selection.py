"""The leave-one-task-out table of selection rules (docs/selection.md), from the released data.

For every study task (sentiment, text2sql, web with recorded performance; the digits study
with trained performance) it reads the proxy values and performance back from an MLflow
store, caches them as Parquet under `<SYNQUE_CACHE>/selection/`, then scores every rule on
every task with the rules learned on the other tasks only (`synque.analysis.loto`), prints
the table, writes it as Markdown, and prints the learned weights for
`configs/rule/learned_rank.yaml`.

    SYNQUE_DATA=... SYNQUE_CACHE=... python bench/bench_selection.py --run   # studies too
    python bench/bench_selection.py                       # from the cached tables / store

`--run` first runs what a task lacks in the store (MiniLM repr and LENS replay on seeds
42..46, recorded performance; `+experiment=digits`), as a user would with `python -m
synque.run`; the MiniLM embeddings of all text tasks take about half an hour on one CPU
thread the first time (then they are in the embedding cache).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from mlflow.tracking import MlflowClient

from synque.analysis.correlation import select_performance
from synque.analysis.loto import TaskTables, learn_weights, loto_table
from synque.analysis.rules import AgreementRank, MeanRank, MedianRank, SelectionRule
from synque.tracking.read import performance_values, proxy_values

REPO = Path(__file__).resolve().parent.parent
TEXT_TASKS = ("sentiment", "text2sql", "web")
#: The digits study scores raw pixels and EfficientNet features; the table keeps one.
DIGITS_EMBEDDER = "efficientnet-lite0"
#: What the text tasks log (select combines all of them); the digits study's image-only
#: proxies (FID, KID, PRDC) are left out so every task is ranked by the same kind of evidence.
METRICS = ("pad", "mmd", "mdm", "mauve", "lens", "lens_raw")


def cache_dir() -> Path:
    """`SYNQUE_CACHE`, else the repository's `.cache` (as `paths.cache_dir`)."""
    return Path(os.environ.get("SYNQUE_CACHE") or REPO / ".cache") / "selection"


def studies(task: str, seeds: list[str]) -> list[list[str]]:
    """The `python -m synque.run` argument lists that produce one task's study."""
    if task == "digits":
        return [["+experiment=digits"]]
    sweep = ["-m", f"seed={','.join(seeds)}"]
    return [
        [f"+experiment={task}_repr", *sweep],
        [f"+experiment={task}_lens", "llm=replay", *sweep],
        [f"+experiment={task}_recorded"],
    ]


def run_studies(task: str, seeds: list[str], uri: str, workdir: Path) -> None:
    """Run a task's studies into the store (finished jobs are skipped by synque itself)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    for args in studies(task, seeds):
        start = time.perf_counter()
        out = workdir / "outputs" / f"{task}-{int(time.time())}"
        cmd = [sys.executable, "-m", "synque.run", *args, "progress=false"]
        cmd += [f"hydra.run.dir={out}", f"hydra.sweep.dir={out}"]
        proc = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
        print(f"  {' '.join(args)}: {time.perf_counter() - start:.0f} s", flush=True)


def read_study(client: MlflowClient, task: str, seeds: list[str] | None) -> TaskTables:
    """A task's proxies (one variant per metric, base names) and performance from MLflow."""
    proxies = proxy_values(client, task, ["repr", "lens"])
    if task == "digits":
        proxies = proxies.filter(pl.col("embedder") == DIGITS_EMBEDDER)
    proxies = proxies.filter(pl.col("metric").is_in(METRICS))
    if seeds and task != "digits":
        proxies = proxies.filter(pl.col("seed").is_in(seeds))
    if proxies.is_empty():
        raise SystemExit(f"no proxy runs of {task} in {client.tracking_uri} (use --run)")
    proxies = proxies.select(
        pl.col("metric").alias("proxy"), "group", "dataset", "seed", "value", "higher_is_better"
    )
    # a seed scores a rule only when every metric was logged on it (a study still running,
    # or repr run on fewer seeds than LENS, would otherwise rank by a subset)
    n_metrics = proxies["proxy"].n_unique()
    complete = proxies.group_by("seed").agg(pl.col("proxy").n_unique().alias("n"))
    complete = complete.filter(pl.col("n") == n_metrics)["seed"]
    proxies = proxies.filter(pl.col("seed").is_in(complete))
    perf, _ = select_performance(performance_values(client, task), "auto")
    return TaskTables(proxies, perf)


def load_tables(
    tasks: list[str], uri: str, seeds: list[str] | None, refresh: bool
) -> dict[str, TaskTables]:
    """Each task's tables from the Parquet cache, or from MLflow (then cached)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri)
    tables = {}
    for task in tasks:
        files = folder / f"{task}.proxies.parquet", folder / f"{task}.performance.parquet"
        if refresh or not all(f.exists() for f in files):
            study = read_study(client, task, seeds)
            study.proxies.write_parquet(files[0])
            study.performance.write_parquet(files[1])
        tables[task] = TaskTables(pl.read_parquet(files[0]), pl.read_parquet(files[1]))
    return tables


def _ci(row: dict) -> str:
    lo, hi = row.get("spearman_lo"), row.get("spearman_hi")
    return "" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]"


def markdown(table: pl.DataFrame, weights: dict[str, dict[str, float]]) -> str:
    """The LOTO table as Markdown: per task one row per rule, then the learned weights."""
    lines = []
    for (task,), part in table.group_by("task", maintain_order=True):
        n = part["n_datasets"][0]
        lines += [
            f"#### {task} ({n} candidate sets, {part['n_groups'][0]} groups, "
            f"{part['n_seeds'][0]} seeds)",
            "",
            "| rule | kind | Spearman [95% CI] | Kendall | top-1 | top-3 | oracle top-3 | "
            "mean all | regret top-1 | regret top-3 |",
            "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in part.iter_rows(named=True):
            lines.append(
                f"| {row['rule']} | {row['kind']} | {row['spearman']:.3f}{_ci(row)} | "
                f"{row['kendall']:.3f} | {row['top1']:.4f} | {row['top3']:.4f} | "
                f"{row['top3_oracle']:.4f} | {row['mean_all']:.4f} | {row['regret1']:.4f} | "
                f"{row['regret3']:.4f} |"
            )
        learned = ", ".join(f"{k} {v:.1f}" for k, v in weights[part["task"][0]].items())
        lines += ["", f"learned_rank weights (learned without {task}): {learned}", ""]
    return "\n".join(lines)


def overview_markdown(table: pl.DataFrame) -> str:
    """Spearman per task and rule, the mean over tasks, and the top-3 regret per task."""
    wide = overview(table)
    tasks = [c for c in wide.columns if c not in ("rule", "kind", "mean", *_regrets(wide))]
    header = ["rule", "kind", *tasks, "mean", *(f"regret top-3 {t}" for t in tasks)]
    lines = ["| " + " | ".join(header) + " |", "|:--|:--|" + "--:|" * (len(header) - 2)]
    for row in wide.iter_rows(named=True):
        cells = [row["rule"], row["kind"], *(_num(row[t], ".3f") for t in tasks)]
        cells += [_num(row["mean"], ".3f"), *(_num(row[f"regret3.{t}"], ".4f") for t in tasks)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _regrets(wide: pl.DataFrame) -> list[str]:
    return [c for c in wide.columns if c.startswith("regret3.")]


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def overview(table: pl.DataFrame) -> pl.DataFrame:
    """Spearman and top-3 regret per rule (rows) and task (columns), plus the best proxy."""
    wide = table.pivot(on="task", index=["rule", "kind"], values="spearman")
    regret = table.pivot(on="task", index=["rule", "kind"], values="regret3")
    tasks = [c for c in wide.columns if c not in ("rule", "kind")]
    wide = wide.with_columns(pl.mean_horizontal(tasks).alias("mean"))
    regret = regret.rename({t: f"regret3.{t}" for t in tasks})
    return wide.join(regret, on=["rule", "kind"]).sort("mean", descending=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=[*TEXT_TASKS, "digits"])
    parser.add_argument("--seeds", nargs="+", default=["42", "43", "44", "45", "46"])
    parser.add_argument("--uri", help="MLflow store (default: <cache>/selection/mlflow.db)")
    parser.add_argument("--run", action="store_true", help="run the studies a task lacks")
    parser.add_argument("--refresh", action="store_true", help="re-read MLflow, not the cache")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--step", type=float, default=0.1, help="weight grid step")
    parser.add_argument("--out", type=Path, help="Markdown file (default: <cache>/selection)")
    args = parser.parse_args()

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    uri = args.uri or f"sqlite:///{folder / 'mlflow.db'}"
    if args.run:
        for task in args.tasks:
            print(f"{task}: studies into {uri}", flush=True)
            run_studies(task, args.seeds, uri, folder)
    tables = load_tables(args.tasks, uri, args.seeds, args.refresh or args.run)
    fixed: dict[str, SelectionRule] = {
        "mean_rank": MeanRank(),
        "median_rank": MedianRank(),
        "agreement_rank": AgreementRank(),
    }
    start = time.perf_counter()
    table, weights = loto_table(tables, fixed, [1, 3], args.bootstrap, 0.95, 0, args.step)
    print(f"LOTO table in {time.perf_counter() - start:.1f} s")
    text = overview_markdown(table) + "\n\n" + markdown(table, weights)
    out = args.out or folder / "loto.md"
    out.write_text(text + "\n")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=3):
        print(overview(table))
    print(f"\nMarkdown: {out}")
    names = sorted({n for t in tables.values() for n in t.names})
    print("learned_rank weights on every task:", learn_weights(tables, names, args.step))
    print("held out:", weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Parity check: correlations of this tree vs. the commit before the analysis reshape.

Checks out `--old` (default c950892, the last commit before `synque/analysis` existed) into
a temporary `git worktree`, runs the same studies in both trees -- representation proxies
(MiniLM) and LENS (`llm=replay`) on the given seeds, recorded performance, correlate -- with
one shared embedding cache (embeddings are computed once) and a separate MLflow store per
tree, then compares both correlate runs' `summary.csv` and `correlations.csv` column by
column. Exit 1 when any value differs by more than `--tol`, or rows/columns differ.

    SYNQUE_DATA=/path/to/synque-data python bench/bench_parity.py
    python bench/bench_parity.py --tasks sentiment --seeds 42 43             # a quick look
    python bench/bench_parity.py --tasks web --extra debug=default           # a debug slice

A cold text2sql repr sweep takes about 15 minutes on a laptop CPU; a warm `--cache` skips
the embedding (proxies are computed in both trees either way).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parent.parent
TABLES = {"summary.csv": ["proxy"], "correlations.csv": ["proxy", "group", "seed"]}


def study(task: str, seeds: list[str], extra: list[str]) -> list[list[str]]:
    """The commands of one task's study, in order (the last one is correlate)."""
    sweep = ["-m", f"seed={','.join(seeds)}"]
    return [
        [f"+experiment={task}_repr", *sweep, *extra],
        [f"+experiment={task}_lens", "llm=replay", *sweep, *extra],
        [f"+experiment={task}_recorded", *extra],
        [f"+experiment={task}_correlate", *extra],
    ]


def run_in_tree(tree: Path, args: list[str], env: dict[str, str], log: Path) -> float:
    """`python -m synque.run ARGS` with the tree's own code; wall seconds, output to `log`."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ python -m synque.run {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "synque.run", *args, "progress=false"],
            cwd=tree,
            env={**env, "PYTHONPATH": str(tree)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-25:]
        raise SystemExit(f"failed in {tree}: {' '.join(args)}\n" + "\n".join(tail))
    return time.perf_counter() - start


def correlate_tables(uri: str, task: str, folder: Path) -> dict[str, pl.DataFrame]:
    """The newest correlate run's tables of a task in one store."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"synque-{task}")
    runs = client.search_runs(
        [exp.experiment_id],
        "tags.`synque.stage` = 'correlate' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SystemExit(f"no FINISHED correlate run for {task} in {uri}")
    run_id = runs[0].info.run_id
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: pl.read_csv(
            client.download_artifacts(run_id, name, str(folder)),
            schema_overrides={"seed": pl.String},
        )
        for name in TABLES
    }


def column_differences(old: pl.DataFrame, new: pl.DataFrame, keys: list[str]) -> dict[str, float]:
    """Max |old - new| per column over rows matched by `keys` (inf: rows, nulls or text
    differ; a column only one side has counts as inf too)."""
    out: dict[str, float] = {}
    for col in sorted(set(old.columns) ^ set(new.columns)):
        out[col] = math.inf
    joined = old.join(new, on=keys, how="full", suffix="_new", coalesce=True)
    if joined.height != old.height or joined.height != new.height:
        out["<rows>"] = math.inf
    for col in [c for c in old.columns if c in new.columns and c not in keys]:
        a, b = joined[col], joined[f"{col}_new"]
        if a.dtype.is_numeric() and b.dtype.is_numeric():
            a, b = a.cast(pl.Float64).fill_nan(None), b.cast(pl.Float64).fill_nan(None)
            if (a.is_null() != b.is_null()).any():
                out[col] = math.inf
                continue
            diff = (a - b).abs().max()
            out[col] = 0.0 if diff is None else float(diff)
        else:
            same = (a.cast(pl.String) == b.cast(pl.String)) | (a.is_null() & b.is_null())
            out[col] = 0.0 if same.fill_null(False).all() else math.inf
    return out


def report(task: str, tables: dict[str, dict[str, pl.DataFrame]], tol: float) -> bool:
    """Print the differences of one task; True when every column is within `tol`."""
    ok = True
    for name, keys in TABLES.items():
        diffs = column_differences(tables["old"][name], tables["new"][name], keys)
        worst = max(diffs.values(), default=0.0)
        ok &= worst <= tol
        rows = tables["new"][name].height
        print(f"  {name} ({rows} rows): max |old - new| = {worst:.3g}")
        for col, diff in diffs.items():
            flag = "" if diff <= tol else "   <-- differs"
            print(f"    {col:<18} {diff:.3g}{flag}")
    return ok


def add_worktree(commit: str, path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit],
        check=True,
        capture_output=True,
    )


def remove_worktree(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
        check=False,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "text2sql", "web"])
    parser.add_argument("--seeds", nargs="+", default=["42", "43", "44", "45", "46"])
    parser.add_argument(
        "--cache",
        default=os.environ.get("SYNQUE_CACHE", str(REPO / ".cache")),
        help="embedding/LLM cache shared by both trees (default: $SYNQUE_CACHE or .cache)",
    )
    parser.add_argument("--old", default="c950892", help="commit to compare against")
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--extra", nargs="*", default=[], help="Hydra overrides for every step")
    parser.add_argument("--keep", action="store_true", help="keep stores and logs (printed)")
    opts = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    seeds = [s for arg in opts.seeds for s in arg.split(",") if s]

    tmp = Path(tempfile.mkdtemp(prefix="synque-parity-"))
    old_tree = tmp / "old-tree"
    add_worktree(opts.old, old_tree)
    trees = {"old": old_tree, "new": REPO}
    ok = True
    try:
        base_env = {**os.environ, "SYNQUE_CACHE": str(Path(opts.cache).resolve())}
        base_env.setdefault("HF_HUB_OFFLINE", "1")
        for task in opts.tasks:
            tables: dict[str, dict[str, pl.DataFrame]] = {}
            for side, tree in trees.items():
                work = tmp / side
                work.mkdir(exist_ok=True)
                uri = f"sqlite:///{work / 'mlflow.db'}"
                env = {**base_env, "MLFLOW_TRACKING_URI": uri}
                outputs = [f"paths.output_dir={work / 'outputs'}"]
                for args in study(task, seeds, opts.extra):
                    seconds = run_in_tree(tree, [*args, *outputs], env, work / "log.txt")
                    print(f"[{side}] {' '.join(args)}: {seconds:.1f} s", flush=True)
                tables[side] = correlate_tables(uri, task, work / f"{task}-tables")
            print(f"{task} (seeds {','.join(seeds)}), {opts.old} vs. working tree:")
            ok &= report(task, tables, opts.tol)
    finally:
        remove_worktree(old_tree)
        if opts.keep:
            print(f"stores and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("parity: OK" if ok else f"parity: FAILED (tolerance {opts.tol:g})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

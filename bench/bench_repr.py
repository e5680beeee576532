"""Benchmark: a representation study, cold and warm (optionally against another commit).

Runs `<task>_repr -m seed=...` twice against a fresh MLflow store and a fresh embedding
cache (cold), then again (warm: every config hash FINISHED, every text cached), and prints
wall times, embedding texts/s, seconds per proxy and MLflow overhead per child run.
`--compare REV` does the same for another commit (a temporary git worktree) in the same
run, alternating the two so machine load hits both alike, and prints them side by side.

    SYNQUE_DATA=/path/to/synque-data python bench/bench_repr.py [--seeds 42,43,44,45,46]
    python bench/bench_repr.py --compare c950892     # before/after a change
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

import pandas as pd
from _cli import checkout, run_cli
from mlflow.tracking import MlflowClient


def measure(task: str, seeds: str, extra: list[str], tree: Path | None) -> dict[str, float]:
    """Cold then warm sweep in a fresh store and cache; the figures of one checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SYNQUE_CACHE": str(Path(tmp) / "cache")}
        sweep = [f"+experiment={task}_repr", "-m", f"seed={seeds}", "progress=false"]
        sweep += [f"paths.output_dir={tmp}/outputs", *extra]
        client = MlflowClient(uri)
        cold = run_cli(sweep, env, tree)
        exp = client.get_experiment_by_name(f"synque-{task}")
        n_cold = len(client.search_runs([exp.experiment_id], max_results=10000))
        warm = run_cli(sweep, env, tree)
        runs = client.search_runs([exp.experiment_id], max_results=10000)
    parents = pd.DataFrame([r.data.metrics for r in runs if r.data.tags["synque.role"] == "parent"])
    children = pd.DataFrame([r.data.metrics for r in runs if r.data.tags["synque.role"] == "child"])
    embedded, seconds = parents.embed_embedded.sum(), parents.embed_embed_seconds.sum()
    out = {
        "child runs": len(children),
        "cold sweep wall, s": cold,
        "warm sweep wall, s": warm,
        "warm as share of cold, %": 100 * warm / cold,
        "runs logged by the rerun": len(runs) - n_cold,
        "texts embedded (cold)": embedded,
        "embedding texts/s": embedded / max(seconds, 1e-9),
        "MLflow seconds per child": parents.mlflow_seconds_per_child.mean(),
        "stage seconds per seed": parents.stage_seconds.mean(),
    }
    for col in sorted(c for c in children.columns if c.startswith("seconds.")):
        out[f"{col[8:]} seconds per set"] = children[col].mean()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--compare", default=None, help="another commit to measure beside this")
    parser.add_argument("--extra", nargs="*", default=[], help="extra Hydra overrides")
    opts = parser.parse_args()

    with checkout(opts.compare) if opts.compare else contextlib.nullcontext() as other:
        columns = {"this tree": measure(opts.task, opts.seeds, opts.extra, None)}
        if other is not None:
            columns[opts.compare] = measure(opts.task, opts.seeds, opts.extra, other)
    print(f"task {opts.task}, seeds {opts.seeds}")
    names = list(columns)
    print(f"{'figure':<30}" + "".join(f"{n:>16}" for n in names))
    for key in columns[names[0]]:
        print(f"{key:<30}" + "".join(f"{columns[n].get(key, float('nan')):>16.3f}" for n in names))
    if len(names) == 2:
        for key in ("cold sweep wall, s", "warm sweep wall, s"):
            a, b = columns[names[0]][key], columns[names[1]][key]
            print(f"{key}: this tree is {100 * (a - b) / b:+.1f}% against {names[1]}")


if __name__ == "__main__":
    main()

"""Benchmark: the sentiment representation study, cold and warm.

Runs `sentiment_repr -m seed=...` twice against a fresh MLflow store and a fresh embedding
cache (cold), then again (warm: every config hash FINISHED, every text cached), and prints
wall times, embedding texts/s, seconds per proxy and MLflow overhead per child run.

    SYNQUE_DATA=/path/to/synque-data python bench/bench_repr.py [--seeds 42,43,44,45,46]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd
from _cli import run_cli
from mlflow.tracking import MlflowClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--extra", nargs="*", default=[], help="extra Hydra overrides")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SYNQUE_CACHE": str(Path(tmp) / "cache")}
        sweep = [f"+experiment={opts.task}_repr", "-m", f"seed={opts.seeds}", "progress=false"]
        sweep += [f"paths.output_dir={tmp}/outputs", *opts.extra]
        client = MlflowClient(uri)
        cold = run_cli(sweep, env)
        exp = client.get_experiment_by_name(f"synque-{opts.task}")
        n_cold = len(client.search_runs([exp.experiment_id], max_results=10000))
        warm = run_cli(sweep, env)
        runs = client.search_runs([exp.experiment_id], max_results=10000)
        parents = [r for r in runs if r.data.tags["synque.role"] == "parent"]
        children = [r for r in runs if r.data.tags["synque.role"] == "child"]
        pm = pd.DataFrame([r.data.metrics for r in parents])
        cm = pd.DataFrame([r.data.metrics for r in children])

    embedded = pm.embed_embedded.sum()
    seconds = pm.embed_embed_seconds.sum()
    n_seeds = len(opts.seeds.split(","))
    print(
        f"task {opts.task}, seeds {opts.seeds}: {len(children)} child runs, {len(parents)} parents"
    )
    print(f"cold sweep wall            {cold:8.1f} s")
    print(f"warm sweep wall (rerun)    {warm:8.1f} s   ({warm / cold:.1%} of cold)")
    print(f"runs logged by the rerun   {len(runs) - n_cold:8d}")
    print(f"texts embedded (cold)      {int(embedded):8d}   in {seconds:.1f} s")
    print(f"embedding throughput       {embedded / max(seconds, 1e-9):8.0f} texts/s")
    print(f"cache hits (cold sweep)    {int(pm.embed_cache_hits.sum()):8d}")
    for col in sorted(c for c in cm.columns if c.startswith("seconds.")):
        print(
            f"{col[8:]:<8} seconds per set  {cm[col].mean():8.3f}   (median {cm[col].median():.3f})"
        )
    print(f"MLflow seconds per child   {pm.mlflow_seconds_per_child.mean():8.3f}")
    print(f"stage seconds per seed     {pm.stage_seconds.mean():8.1f}   ({n_seeds} seeds)")


if __name__ == "__main__":
    main()

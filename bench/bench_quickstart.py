"""Benchmark: the quickstart, cold (fresh cache and store) and warm (rerun).

Prints wall time of both runs, each stage's seconds (from the parent runs' `stage_seconds`)
and training seconds per candidate set.

    python bench/bench_quickstart.py [--debug]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _cli import run_cli
from mlflow.tracking import MlflowClient


def stage_seconds(client: MlflowClient, exp_id: str, run_ids: set[str] | None = None) -> dict:
    out: dict[str, float] = {}
    for r in client.search_runs([exp_id], "tags.`synque.role` = 'parent'", max_results=1000):
        if run_ids is not None and r.info.run_id in run_ids:
            continue
        stage = r.data.tags["synque.stage"]
        out[stage] = out.get(stage, 0.0) + r.data.metrics.get("stage_seconds", 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="debug=quickstart size")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SYNQUE_CACHE": str(Path(tmp) / "c")}
        args = ["+experiment=quickstart", f"paths.output_dir={tmp}/out", "progress=false"]
        args += ["debug=quickstart"] if opts.debug else []
        client = MlflowClient(uri)
        cold = run_cli(args, env)
        exp = client.get_experiment_by_name("synque-quickstart")
        cold_runs = {
            r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=5000)
        }
        cold_stages = stage_seconds(client, exp.experiment_id)
        warm = run_cli(args, env)
        warm_stages = stage_seconds(client, exp.experiment_id, cold_runs)
        trained = client.search_runs(
            [exp.experiment_id],
            "tags.`synque.stage` = 'train' and tags.`synque.role` = 'child'",
            max_results=1000,
        )
    print(f"quickstart{' (debug size)' if opts.debug else ''}")
    print(f"cold wall {cold:7.1f} s   warm wall {warm:7.1f} s")
    print(f"{'stage':<10} {'cold s':>8} {'warm s':>8}")
    for stage, seconds in cold_stages.items():
        print(f"{stage:<10} {seconds:8.1f} {warm_stages.get(stage, 0.0):8.1f}")
    per_set = [r.data.metrics["train_seconds"] for r in trained]
    if per_set:
        print(f"training seconds per candidate set: mean {sum(per_set) / len(per_set):.1f}")


if __name__ == "__main__":
    main()

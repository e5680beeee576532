"""Benchmark: the digits study (`+experiment=digits`), cold and warm, with its results.

Runs the whole study in a fresh cache and store (cold), then again (warm), and prints the
wall times, each stage's seconds, the ground truth (test accuracy of the CNN per candidate
set, mean and standard deviation over the training seeds, and the best-minus-worst spread)
and every proxy's Spearman and Kendall against trained performance with bootstrap CIs.

    python bench/bench_digits.py [--debug]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

import mlflow
import polars as pl
from _cli import run_cli
from bench_quickstart import stage_seconds
from mlflow.tracking import MlflowClient


def ground_truth(client: MlflowClient, exp_id: str) -> pl.DataFrame:
    runs = client.search_runs(
        [exp_id], "tags.`synque.stage` = 'train' and tags.`synque.role` = 'child'", max_results=5000
    )
    rows = [
        {
            "dataset": r.data.tags["synque.dataset"],
            "seed": r.data.tags["synque.seed"],
            **{k: r.data.metrics[k] for k in ("top1", "mrr", "train_seconds")},
        }
        for r in runs
    ]
    return (
        pl.DataFrame(rows)
        .group_by("dataset")
        .agg(
            pl.col("top1").mean().alias("top1"),
            pl.col("top1").std().alias("top1_std"),
            pl.col("mrr").mean().alias("mrr"),
            pl.col("train_seconds").mean().alias("seconds"),
        )
        .sort("top1", descending=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="debug=digits size")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SYNQUE_CACHE": str(Path(tmp) / "c")}
        args = ["+experiment=digits", f"paths.output_dir={tmp}/out", "progress=false"]
        args += ["debug=digits"] if opts.debug else []
        client = MlflowClient(uri)
        cold = run_cli(args, env)
        exp = client.get_experiment_by_name("synque-digits")
        before = {r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=9999)}
        stages = stage_seconds(client, exp.experiment_id)
        warm = run_cli(args, env)
        n_new = len(client.search_runs([exp.experiment_id], max_results=9999)) - len(before)
        truth = ground_truth(client, exp.experiment_id)
        corr = client.search_runs(
            [exp.experiment_id],
            "tags.`synque.stage` = 'correlate'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )[0]
        mlflow.set_tracking_uri(uri)
        text = mlflow.artifacts.load_text(f"runs:/{corr.info.run_id}/summary.csv")
        summary = pl.read_csv(io.StringIO(text))

    print(f"digits study{' (debug size)' if opts.debug else ''}, 2-core CPU figures")
    print(f"cold wall {cold:7.1f} s   warm rerun {warm:6.1f} s   runs logged by the rerun {n_new}")
    print("stage seconds (cold): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print("\nground truth: CNN test accuracy per candidate set (mean, std over training seeds)")
    with pl.Config(tbl_rows=50, float_precision=3, tbl_hide_dataframe_shape=True):
        print(truth)
        spread = truth["top1"].max() - truth["top1"].min()
        print(
            f"best - worst top-1: {spread:.3f}; largest std over seeds "
            f"{truth['top1_std'].max():.3f}"
        )
        print("\nproxies against trained performance (mean over seeds; 95% bootstrap CI)")
        cols = [
            c
            for c in (
                "proxy",
                "spearman",
                "spearman_lo",
                "spearman_hi",
                "kendall",
                "kendall_lo",
                "kendall_hi",
            )
            if c in summary.columns
        ]
        print(summary.select(cols).sort("spearman", descending=True))


if __name__ == "__main__":
    main()

"""End to end through the CLI on a tiny slice: sweep, idempotent rerun, correlate, failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from tests.conftest import needs_data
from tests.test_tasks import make_folder

TINY = ["debug=default", "task.max_groups=1", "task.max_candidates=3", "task.max_examples=30"]


def all_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=10000) if exp else []


@needs_data
def test_sweep_rerun_and_correlate(cli, tracking_uri: str) -> None:
    cli("+experiment=sentiment_recorded")
    cli("+experiment=sentiment_repr", "-m", "seed=42,43", *TINY)
    runs = all_runs(tracking_uri, "synque-sentiment")
    repr_runs = [r for r in runs if r.data.tags["synque.stage"] == "repr"]
    parents = [r for r in repr_runs if r.data.tags["synque.role"] == "parent"]
    children = [r for r in repr_runs if r.data.tags["synque.role"] == "child"]
    assert len(parents) == 2 and len(children) == 6
    assert all(r.info.status == "FINISHED" for r in runs)
    child = children[0]
    for tag in ("stage", "task", "dataset", "group", "seed", "config_hash", "embedder", "proxy"):
        assert f"synque.{tag}" in child.data.tags, tag
    assert child.data.tags["synque.group"] == "all"
    assert child.data.tags["mlflow.parentRunId"] in {p.info.run_id for p in parents}
    assert {"pad", "mmd", "mdm", "mauve"} <= set(child.data.metrics)
    contexts = {d.tags[0].value for d in child.inputs.dataset_inputs}
    assert contexts == {"synthetic", "real"}
    assert all(d.dataset.digest for d in child.inputs.dataset_inputs)
    parent = parents[0]
    assert parent.data.params["task.kind"] == "sentiment"
    client = MlflowClient(tracking_uri)
    cfg_text = client.download_artifacts(parent.info.run_id, "config.yaml")
    assert "sentiment" in Path(cfg_text).read_text()

    # a rerun of the same sweep logs nothing new; force=true logs again
    cli("+experiment=sentiment_repr", "-m", "seed=42,43", *TINY)
    assert len(all_runs(tracking_uri, "synque-sentiment")) == len(runs)
    cli("+experiment=sentiment_repr", "seed=43", "force=true", *TINY)
    assert len(all_runs(tracking_uri, "synque-sentiment")) == len(runs) + 4

    proc = cli("+experiment=sentiment_correlate", "stage.bootstrap=50")
    assert "pad" in proc.stdout and "spearman" in proc.stdout
    corr = [
        r
        for r in all_runs(tracking_uri, "synque-sentiment")
        if r.data.tags["synque.stage"] == "correlate"
    ]
    assert len(corr) == 1 and corr[0].info.status == "FINISHED"
    summary = pd.read_csv(client.download_artifacts(corr[0].info.run_id, "summary.csv"))
    assert set(summary.proxy) == {"pad", "mmd", "mdm", "mauve"}
    assert {"proxy", "spearman", "kendall", "pearson"} <= set(summary.columns)
    assert summary.spearman.between(-1, 1).all()
    assert "spearman.pad" in corr[0].data.metrics
    detail = pd.read_csv(client.download_artifacts(corr[0].info.run_id, "correlations.csv"))
    assert len(detail) == 4 * 2  # proxies x seeds (one group)
    plots = [f.path for f in client.list_artifacts(corr[0].info.run_id, "plots")]
    assert "plots/scatter_pad.png" in plots


def test_folder_task_end_to_end_and_failure(cli, tracking_uri: str, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "reviews", n=16)
    cli("+experiment=folder_recorded", f"task.root={root}")
    cli("+experiment=folder_repr", f"task.root={root}", "proxy.mauve.num_buckets=4")
    proc = cli("+experiment=folder_correlate", f"task.root={root}", "stage.bootstrap=20")
    assert "mmd" in proc.stdout
    runs = all_runs(tracking_uri, "synque-reviews")
    assert {r.data.tags["synque.stage"] for r in runs} == {"train", "repr", "correlate"}

    # a malformed candidate set: one-line error naming the file, exit 1, run FAILED not RUNNING
    (root / "synthetic" / "set2.parquet").unlink()
    (root / "synthetic" / "set2.jsonl").write_text('{"text": "fine", "label": 0}\n{"text": \n')
    proc = cli("+experiment=folder_repr", f"task.root={root}", "force=true", check=False)
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.startswith("synque: error")]
    assert len(err) == 1 and "set2.jsonl" in err[0] and "line 2" in err[0]
    statuses = [r.info.status for r in all_runs(tracking_uri, "synque-reviews")]
    assert "RUNNING" not in statuses and "FAILED" in statuses
    failed = [r for r in all_runs(tracking_uri, "synque-reviews") if r.info.status == "FAILED"]
    assert any("set2.jsonl" in r.data.tags.get("synque.error", "") for r in failed)


def test_missing_task_folder_is_one_line(cli, tmp_path: Path) -> None:
    proc = cli("+experiment=folder_repr", f"task.root={tmp_path / 'absent'}", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("synque: error: task")
    assert "absent" in proc.stderr

"""End to end through the CLI on a tiny slice: sweep, idempotent rerun, correlate, failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import needs_data
from tests.fakes.folders import make_folder

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

    # a malformed candidate set: one-line error naming the file, exit 1, found before any
    # run opens (the inputs are checked before the embedder loads), so nothing is left RUNNING
    (root / "synthetic" / "set2.parquet").unlink()
    (root / "synthetic" / "set2.jsonl").write_text('{"text": "fine", "label": 0}\n{"text": \n')
    before = len(all_runs(tracking_uri, "synque-reviews"))
    proc = cli("+experiment=folder_repr", f"task.root={root}", "force=true", check=False)
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.startswith("synque: error")]
    assert len(err) == 1 and "set2.jsonl" in err[0] and "line 2" in err[0]
    after = all_runs(tracking_uri, "synque-reviews")
    assert "RUNNING" not in [r.info.status for r in after] and len(after) == before


def test_missing_task_folder_is_one_line(cli, tmp_path: Path) -> None:
    proc = cli("+experiment=folder_repr", f"task.root={tmp_path / 'absent'}", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("synque: error: task")
    assert "absent" in proc.stderr


@needs_data
def test_default_proxies_equal_the_formulas(make_cfg, tmp_path: Path) -> None:
    """The logged PAD/MMD/MDM equal an independent computation on the same MiniLM embeddings."""
    import kmedoids
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics.pairwise import euclidean_distances, polynomial_kernel
    from sklearn.model_selection import train_test_split

    from synque.stages.common import load_task, open_embedder
    from synque.stages.repr import run_repr

    cfg = make_cfg("+experiment=sentiment_repr", "seed=44", *TINY[1:], "task.max_candidates=1")
    run_repr(cfg)
    child = next(
        r
        for r in all_runs(cfg.tracking.uri, "synque-sentiment")
        if r.data.tags["synque.role"] == "child"
    )
    task = load_task(cfg)
    emb = open_embedder(cfg)
    name = child.data.tags["synque.dataset"]
    synth = emb.embed(task.load_candidate("all", name)["text"].to_list())
    real = emb.embed(task.real_sample("all", 44)["text"].to_list())

    x = np.vstack([synth, real])
    y = np.r_[np.zeros(len(synth)), np.ones(len(real))]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=42)
    p = LogisticRegression().fit(x_tr, y_tr).predict_proba(x_te)[:, 1]
    pad = 2 * (1 - 2 * np.mean(np.abs(p - y_te)))

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return polynomial_kernel(a, b, degree=3, gamma=1 / a.shape[1], coef0=1)

    s64, r64 = synth.astype(np.float64), real.astype(np.float64)
    mmd = k(s64, s64).mean() + k(r64, r64).mean() - 2 * k(s64, r64).mean()

    dist = euclidean_distances(synth.astype(np.float64))
    fit = kmedoids.fasterpam(dist, 5, random_state=44)
    labels, medoids = np.asarray(fit.labels), np.asarray(fit.medoids)
    mdm = np.mean([dist[labels == c, m].mean() for c, m in enumerate(medoids)])

    metrics = child.data.metrics
    assert metrics["pad"] == pytest.approx(pad, abs=1e-6)
    assert metrics["mmd"] == pytest.approx(mmd, rel=1e-4)
    assert metrics["mdm"] == pytest.approx(mdm, rel=1e-4)


def test_bad_proxy_option_fails_before_any_run(make_cfg, tmp_path: Path) -> None:
    from synque import SynqueError
    from synque.stages.repr import run_repr

    root = make_folder(tmp_path / "t")
    cfg = make_cfg("+experiment=folder_repr", f"task.root={root}", "+proxy.pad.clasifier=xgboost")
    with pytest.raises(SynqueError, match="unknown option"):
        run_repr(cfg)
    assert not (tmp_path / "mlruns").exists() or not all_runs(cfg.tracking.uri, "synque-t")


def test_parallel_sweep_creates_the_store_once(cli, tracking_uri: str, tmp_path: Path) -> None:
    """Two joblib workers start on an empty sqlite store: the file lock lets both log."""
    root = make_folder(tmp_path / "par", n=16)
    cli(
        "+experiment=folder_repr",
        f"task.root={root}",
        "proxy=[mmd,mdm]",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "-m",
        "seed=1,2",
    )
    runs = all_runs(tracking_uri, "synque-par")
    parents = [r for r in runs if r.data.tags["synque.role"] == "parent"]
    assert sorted(r.data.tags["synque.seed"] for r in parents) == ["1", "2"]
    assert len(runs) == 2 * (1 + 3) and {r.info.status for r in runs} == {"FINISHED"}

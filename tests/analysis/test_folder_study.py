"""A user folder of five candidate sets that a proxy orders perfectly, end to end: correlate
used to crash drawing its bootstrap interval ("'yerr' must not contain negative values");
select on the same runs recommends the set the proxy ranks best."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from tests.fakes.folders import make_folder


def _five_sets_ordered_by_mmd(root: Path, values: dict[str, float]) -> None:
    """Rewrite performance.csv so that performance falls strictly as MMD rises."""
    order = sorted(values, key=values.get)
    rows = [f"{name},{0.9 - 0.1 * i}" for i, name in enumerate(order)]
    (root / "performance.csv").write_text("dataset,task_performance\n" + "\n".join(rows) + "\n")


def test_folder_whose_proxy_orders_every_set_perfectly(
    make_cfg, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synque.stages import correlate
    from synque.stages.repr import run_repr
    from synque.stages.train import run_train

    root = make_folder(tmp_path / "perfect", n_sets=3)
    for s in (3, 4):  # two more candidate sets: five in all, as in the report
        rows = [{"text": f"set {s}: movie {i} is {'ok' * s}", "label": i % 2} for i in range(12)]
        (root / "synthetic" / f"set{s}.jsonl").write_text("\n".join(map(json.dumps, rows)))
    run_repr(make_cfg("+experiment=folder_repr", f"task.root={root}", "proxy=[mmd,mdm]"))
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("synque-perfect")
    children = client.search_runs([exp.experiment_id], "tags.`synque.role` = 'child'")
    mmd = {r.data.tags["synque.dataset"]: r.data.metrics["mmd"] for r in children}
    assert len(mmd) == 5
    _five_sets_ordered_by_mmd(root, mmd)
    run_train(make_cfg("+experiment=folder_recorded", f"task.root={root}"))

    cfg = make_cfg("+experiment=folder_correlate", f"task.root={root}", "stage.bootstrap=200")
    correlate.run_correlate(cfg)  # raised "'yerr' must not contain negative values"
    corr = client.search_runs([exp.experiment_id], "tags.`synque.stage` = 'correlate'")[0]
    assert corr.info.status == "FINISHED"
    assert "synque.warning.plots" not in corr.data.tags
    plots = {f.path for f in client.list_artifacts(corr.info.run_id, "plots")}
    assert plots == {"plots/scatter_mmd.png", "plots/scatter_mdm.png", "plots/summary_spearman.png"}
    summary = pl.read_csv(client.download_artifacts(corr.info.run_id, "summary.csv"))
    row = summary.filter(proxy="mmd").row(0, named=True)
    assert row["spearman"] == pytest.approx(-1.0) and row["kendall"] == pytest.approx(-1.0)
    assert row["spearman_lo"] == pytest.approx(-1.0) and row["spearman_hi"] == pytest.approx(-1.0)
    assert row["n_datasets"] == 5

    # a plot that cannot be drawn costs a warning tag, never the run or its tables
    def broken(*args: object) -> list[Path]:
        raise ValueError("no figure today\nsecond line")

    monkeypatch.setattr(correlate, "correlation_plots", broken)
    correlate.run_correlate(cfg)
    runs = client.search_runs(
        [exp.experiment_id], "tags.`synque.stage` = 'correlate'", order_by=["start_time DESC"]
    )
    assert len(runs) == 2 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["synque.warning.plots"] == "ValueError: no figure today"
    artifacts = {f.path for f in client.list_artifacts(runs[0].info.run_id)}
    assert {"summary.csv", "correlations.csv"} <= artifacts and "plots" not in artifacts
    assert "spearman.mmd" in runs[0].data.metrics

    from synque.stages.select import run_select

    ranking = run_select(
        make_cfg("+experiment=folder_select", f"task.root={root}", "stage.proxies=[mmd]")
    )
    assert ranking["dataset"].to_list() == sorted(mmd, key=mmd.get)  # lower MMD is better
    select = client.search_runs([exp.experiment_id], "tags.`synque.stage` = 'select'")[0]
    assert select.data.tags["synque.best.all"] == min(mmd, key=mmd.get)
    logged = pl.read_csv(client.download_artifacts(select.info.run_id, "ranking.csv"))
    assert logged["rank.mmd"].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0]

"""The quickstart at its debug size, through the CLI: every stage runs for real, a rerun skips."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import needs_smollm2


@pytest.mark.slow
@needs_smollm2
def test_quickstart_debug(cli, tracking_uri: str) -> None:
    proc = cli("+experiment=quickstart", "debug=quickstart")
    assert "Recommendation" in proc.stdout
    assert "mlflow ui --backend-store-uri" in proc.stdout
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("synque-quickstart")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    assert {r.info.status for r in runs} == {"FINISHED"}
    stages = {r.data.tags["synque.stage"] for r in runs}
    assert stages == {"generate", "repr", "rubric", "lens", "train", "correlate", "select"}

    children = [r for r in runs if r.data.tags["synque.role"] == "child"]
    generated = [r for r in children if r.data.tags["synque.stage"] == "generate"]
    assert len(generated) == 3 and all(r.data.metrics["n_examples"] >= 2 for r in generated)
    sets = {r.data.tags["synque.dataset"] for r in generated}
    for stage in ("repr", "lens", "train"):
        assert {
            r.data.tags["synque.dataset"] for r in children if r.data.tags["synque.stage"] == stage
        } == sets
    trained = [r for r in children if r.data.tags["synque.stage"] == "train"]
    assert all(0.0 <= r.data.metrics["task_performance"] <= 1.0 for r in trained)

    select = next(r for r in runs if r.data.tags["synque.stage"] == "select")
    ranking = pd.read_csv(client.download_artifacts(select.info.run_id, "ranking.csv"))
    assert set(ranking.dataset) == sets and "rank.combined" in ranking
    corr = next(r for r in runs if r.data.tags["synque.stage"] == "correlate")
    assert corr.data.tags["synque.performance_source"] == "trained"
    assert {"spearman.pad", "spearman.lens"} <= set(corr.data.metrics)

    # warm: every FINISHED hash is skipped; only the readers (correlate, select) log again
    cli("+experiment=quickstart", "debug=quickstart")
    again = client.search_runs([exp.experiment_id], max_results=5000)
    new = {
        r.data.tags["synque.stage"]
        for r in again
        if r.info.run_id not in {x.info.run_id for x in runs}
    }
    assert new == {"correlate", "select"}

"""`select` says how sure it is, end to end on slices of the paper's released data."""

from __future__ import annotations

import math

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from synque.analysis.confidence import CONFIDENT, DISAGREE, WEAK, Thresholds, verdict
from synque.tracking.read import proxy_values
from tests.conftest import needs_data

SLICE = ["debug=default", "task.max_groups=1", "task.max_examples=20", "task.max_real=30"]
#: Repeats of the random proxies (the paper's single value is the default), for their noise.
NOISE = ["proxy.pad.noise_seeds=3", "proxy.mauve.noise_seeds=3"]
SETS = 4


@pytest.mark.slow  # about 35 s per task on a quiet 2-core machine (MiniLM, MAUVE, MLflow)
@needs_data
@pytest.mark.parametrize("task", ["sentiment", "web"])
def test_select_reports_confidence(task: str, make_cfg, tracking_uri: str, capsys) -> None:
    from synque.stages.repr import run_repr
    from synque.stages.select import run_select

    sets = f"task.max_candidates={SETS}"

    for seed in (42, 43):
        run_repr(make_cfg(f"+experiment={task}_repr", f"seed={seed}", *SLICE, *NOISE, sets))
    client = MlflowClient(tracking_uri)
    # the noise is logged beside each repeated proxy, and never read back as a proxy
    proxies = proxy_values(client, task, ["repr"])
    assert set(proxies["proxy"]) == {"pad", "mmd", "mdm", "mauve"}
    run = client.get_run(proxies.filter(proxy="pad")["run_id"][0])
    assert run.data.metrics["pad.std"] > 0 and run.data.metrics["mauve.std"] >= 0
    assert run.data.tags["synque.noise_seeds.pad"] == "3"

    capsys.readouterr()
    run_select(
        make_cfg(f"+experiment={task}_select", "stage.confidence.resamples=100", *SLICE, sets)
    )
    out = capsys.readouterr().out
    exp = client.get_experiment_by_name(f"synque-{task}")
    (sel,) = client.search_runs([exp.experiment_id], "tags.`synque.stage` = 'select'")
    table = pl.read_csv(client.download_artifacts(sel.info.run_id, "confidence.csv"))
    groups = sorted(proxies["group"].unique())
    assert sorted(table["group"]) == groups
    assert "How sure is the pick?" in out
    for row in table.iter_rows(named=True):
        group = row["group"]
        tag = sel.data.tags[f"synque.verdict.{group}"]
        assert tag == row["verdict"] in {CONFIDENT, WEAK, DISAGREE}
        assert row["recommended"] == sel.data.tags[f"synque.best.{group}"]
        assert row["n_sets"] == SETS and row["n_proxies"] == 4 and row["n_seeds"] == 2
        for source in ("seeds", "proxies", "noise"):
            assert 0 <= row[f"top1.{source}"] <= row[f"top3.{source}"] <= 1
        metrics = sel.data.metrics
        w, top1, top3 = (metrics[f"confidence.{s}.{group}"] for s in ("kendall_w", "top1", "top3"))
        assert (w, top1, top3) == pytest.approx((row["kendall_w"], row["top1"], row["top3"]))
        assert verdict(w, 4, top1, top3, Thresholds()) == tag  # the verdict follows its numbers
        assert not math.isnan(w)
        where = "Verdict: " if group == "all" else f"{group}: "
        assert f"{where}{tag}" in out
    assert "How sure is the pick?" in sel.data.tags["mlflow.note.content"]
    assert all(len(line) <= 80 for line in out.splitlines() if line.startswith("  W="))


def test_notes_fit_mlflow_by_cutting_ranking_rows() -> None:
    from synque.stages.select import RUN_NOTE_LIMIT, _join_notes

    ranking = "\n".join(
        ["### title", "", "| a |", "| :-- |", *[f"| row {i} |" for i in range(900)]]
    )
    sure = "#### How sure is the pick?\n\n| all | weak |"
    assert _join_notes("### short", sure) == f"### short\n\n{sure}"
    joined = _join_notes(ranking, sure)
    assert len(joined) <= RUN_NOTE_LIMIT and joined.endswith(sure)
    kept = joined[: -len(sure)].splitlines()
    assert kept[:4] == ranking.splitlines()[:4]  # title and table header survive
    assert "ranking.csv" in kept[-2] and set(kept[4:-2]) <= set(ranking.splitlines()[4:])

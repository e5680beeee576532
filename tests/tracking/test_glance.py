"""Results at a glance in MLflow's own UI: the headline table and the recommendation as the
experiment's and the runs' descriptions, the experiment kind, MLflow tables and figures, and
aggregating runs (correlate, select) that carry no seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import polars as pl
import pytest
import yaml
from mlflow.tracking import MlflowClient

from synque.stages.lens import judgments_sample
from synque.tracking.notes import (
    EXPERIMENT_KIND,
    MODEL_DEVELOPMENT,
    NOTE,
    mark_model_development,
    with_section,
)
from tests.conftest import needs_data
from tests.fakes.folders import make_folder

PERFORMANCE = {"set0": 0.5, "set1": 0.7, "set2": 0.6, "set3": 0.9}


def _four_sets(root: Path) -> Path:
    """A folder task of four candidate sets (enough for every coefficient) with performance."""
    make_folder(root, n_sets=3)
    rows = [{"text": f"set 3: film {i} was {'so ' * 3}good", "label": i % 2} for i in range(12)]
    (root / "synthetic" / "set3.jsonl").write_text("\n".join(map(json.dumps, rows)))
    lines = [f"{name},{value}" for name, value in PERFORMANCE.items()]
    (root / "performance.csv").write_text("dataset,task_performance\n" + "\n".join(lines) + "\n")
    return root


def _same(a: object, b: object) -> bool:
    """Equal values, numbers up to the 10 decimals of MLflow's JSON tables, null == NaN."""
    missing = [x is None or (isinstance(x, float) and math.isnan(x)) for x in (a, b)]
    if any(missing):
        return all(missing)
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str):
        return a == b
    return float(a) == pytest.approx(float(b), abs=1e-9)


def test_study_at_a_glance(
    make_cfg, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synque.stages.correlate import run_correlate
    from synque.stages.repr import run_repr
    from synque.stages.select import run_select
    from synque.stages.train import run_train
    from synque.tracking.lifecycle import StageRun

    root = _four_sets(tmp_path / "glance")
    task = f"task.root={root}"
    for seed in (1, 2):
        run_repr(make_cfg("+experiment=folder_repr", task, "proxy=[mmd,mdm]", f"seed={seed}"))
    run_train(make_cfg("+experiment=folder_recorded", task))
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("synque-glance")
    assert exp.tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT  # set by the first job
    client.set_experiment_tag(exp.experiment_id, NOTE, "Reviews study, by Ana.")

    cfg = make_cfg("+experiment=folder_correlate", task, "stage.bootstrap=50", "seed=7")
    summary = run_correlate(cfg)
    run_select(make_cfg("+experiment=folder_select", task))

    (corr,) = client.search_runs([exp.experiment_id], "tags.`synque.stage` = 'correlate'")
    (sel,) = client.search_runs([exp.experiment_id], "tags.`synque.stage` = 'select'")
    exp = client.get_experiment(exp.experiment_id)
    note = exp.tags[NOTE]

    # the experiment's description: the user's text, then both sections, each once
    assert note.startswith("Reviews study, by Ana.")
    for section in ("correlate", "select"):
        assert note.count(f"<!-- synque:{section} -->") == 1
    assert set(summary["proxy"]) == {"mmd", "mdm"}
    title = "### glance: proxy vs. recorded task performance · seeds 1, 2 aggregated · 4 candidate"
    assert title in note
    for proxy in summary["proxy"]:
        assert f"| **{proxy}" in note  # one table row per proxy
    assert "| Spearman | Kendall | Pearson | top-1 / oracle | top-3 / oracle | mean all |" in note
    # the runs' descriptions are the same Markdown; the experiment's names the run
    corr_note, sel_note = corr.data.tags[NOTE], sel.data.tags[NOTE]
    assert corr_note.startswith(title) and corr_note in note and corr.info.run_id in note
    assert sel_note.startswith("### glance: which candidate set to train on") and sel_note in note
    best_row = sel_note.splitlines()[4]  # title, blank, header, alignment, then the row
    assert best_row.startswith(f"| **`{sel.data.tags['synque.best.all']}`")
    # how sure the pick is: appended to the select note, tagged and logged
    verdict = sel.data.tags["synque.verdict.all"]
    assert "#### How sure is the pick?" in sel_note
    assert f"| all | **{verdict}**: " in sel_note
    assert f" | `{sel.data.tags['synque.best.all']}` | " in sel_note.split("How sure")[1]
    assert sel.data.tags["synque.verdict"] == verdict
    assert 0 <= sel.data.metrics["confidence.top1_seeds.all"] <= 1
    mmd = summary.filter(proxy="mmd").row(0, named=True)
    ci = f"{mmd['spearman']:.3f} [{mmd['spearman_lo']:.2f}, {mmd['spearman_hi']:.2f}]"
    assert ci in corr_note

    # aggregating runs carry no seed: name, tags, params, config hash
    for run, stage in ((corr, "correlate"), (sel, "select")):
        assert run.info.run_name == f"{stage}-glance"
        assert run.data.tags["synque.seed"] == "all"
        assert run.data.tags["synque.seeds"] == "1, 2"
        assert "seed" not in run.data.params
        config = yaml.safe_load(
            Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text()
        )
        assert "seed" not in config and config["stage"]["name"] == stage
    other_seed = make_cfg("+experiment=folder_correlate", task, "stage.bootstrap=50", "seed=3")
    same_job = StageRun(other_seed, "correlate", "glance", aggregate=True)
    assert same_job.hash == corr.data.tags["synque.config_hash"]
    assert exp.tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT

    # MLflow tables: the same numbers as the CSV artifacts, loadable across runs
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp.experiment_id)
    mlflow.set_tracking_uri(tracking_uri)
    csv = pl.read_csv(client.download_artifacts(corr.info.run_id, "summary.csv"))
    table = mlflow.load_table("summary.json", run_ids=[corr.info.run_id], extra_columns=["run_id"])
    assert list(table.columns) == [*csv.columns, "run_id"] and len(table) == len(csv)
    for expected, got in zip(csv.iter_rows(named=True), table.to_dict("records"), strict=True):
        assert got["run_id"] == corr.info.run_id
        for column, value in expected.items():
            assert _same(value, got[column]), (column, value, got[column])
    detail = mlflow.load_table("correlations.json", run_ids=[corr.info.run_id])
    assert len(detail) == 2 * 2  # proxies x seeds (one group)
    ranking = mlflow.load_table("ranking.json", run_ids=[sel.info.run_id])
    logged = pl.read_csv(client.download_artifacts(sel.info.run_id, "ranking.csv"))
    assert ranking["dataset"].tolist() == logged["dataset"].to_list()
    listed = json.loads(corr.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "summary.json", "type": "table"} in listed

    # figures: the same file names as before, real PNGs
    plots = {f.path for f in client.list_artifacts(corr.info.run_id, "plots")}
    assert plots == {"plots/scatter_mmd.png", "plots/scatter_mdm.png", "plots/summary_spearman.png"}
    png = Path(client.download_artifacts(corr.info.run_id, "plots/summary_spearman.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "synque.warning.plots" not in corr.data.tags
    assert "synque.warning.note" not in corr.data.tags


@needs_data
def test_lens_logs_a_judgments_sample_table(
    make_cfg, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synque.stages.lens import run_lens

    run_lens(make_cfg("+experiment=sentiment_lens", "llm=replay", "debug=default"))
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("synque-sentiment")
    children = client.search_runs(
        [exp.experiment_id], "tags.`synque.stage` = 'lens' and tags.`synque.role` = 'child'"
    )
    assert children
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp.experiment_id)
    mlflow.set_tracking_uri(tracking_uri)
    ids = [r.info.run_id for r in children]
    sample = mlflow.load_table("judgments_sample.json", run_ids=ids, extra_columns=["run_id"])
    for run in children:
        full = pl.read_parquet(client.download_artifacts(run.info.run_id, "judgments.parquet"))
        part = sample[sample["run_id"] == run.info.run_id].drop(columns="run_id")
        assert len(full) <= 200  # the debug slice: the sample is the whole table
        assert part.to_dict("list") == full.to_pandas().to_dict("list")


def test_judgments_sample_is_capped_and_keeps_both_sets() -> None:
    frame = pl.DataFrame(
        {"set": ["synthetic"] * 450 + ["real"] * 60, "index": list(range(450)) + list(range(60))}
    )
    sample = judgments_sample(frame, 200)
    assert len(sample) == 200
    assert (sample["set"] == "real").sum() == 60  # fewer real rows than half: all of them
    assert sample.equals(judgments_sample(frame, 200))  # the same rows on a rerun
    order = [(s != "synthetic", i) for s, i in sample.iter_rows()]
    assert order == sorted(order)  # the table's order
    assert judgments_sample(frame.head(150), 200).equals(frame.head(150))
    both = pl.DataFrame({"set": ["synthetic"] * 300 + ["real"] * 300, "index": range(600)})
    assert (judgments_sample(both, 200)["set"] == "real").sum() == 100


def test_sections_replace_themselves_and_keep_user_text() -> None:
    note = with_section("", "correlate", "table 1")
    assert note == "<!-- synque:correlate -->\n\ntable 1\n\n<!-- /synque:correlate -->"
    note = with_section("My study.", "correlate", "table 1")
    note = with_section(note, "select", "pick A")
    note = with_section(note + "\n\nMore of mine.", "correlate", "table 2")
    assert note.startswith("My study.") and note.endswith("More of mine.")
    assert "table 1" not in note and note.count("table 2") == 1 and "pick A" in note
    assert note.index("table 2") < note.index("pick A")  # replaced where it stood


def test_experiment_kind_is_set_once_and_never_overridden(tracking_uri: str, tmp_path: Path):
    from synque.tracking.store import ensure_experiment

    tmp_path.joinpath("mlruns").mkdir()
    client = MlflowClient(tracking_uri)
    fresh = ensure_experiment(client, "synque-fresh")
    chosen = ensure_experiment(client, "synque-chosen")
    client.set_experiment_tag(chosen, EXPERIMENT_KIND, "genai_development")
    for experiment_id in (fresh, chosen, fresh):
        mark_model_development(client, experiment_id)
    assert client.get_experiment(fresh).tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND] == "genai_development"

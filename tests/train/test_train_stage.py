"""The `train` stage: one component per `train` config, one child run per candidate set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synque import SynqueError
from synque.stages.train import run_train
from tests.fakes.folders import make_folder
from tests.fakes.images import make_image_folder

SMALL_CNN = ["train=small_cnn", "train.image_size=16", "train.max_epochs=2", "train.min_epochs=1"]


def runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def children(uri: str, experiment: str) -> list:
    return [r for r in runs(uri, experiment) if r.data.tags["synque.role"] == "child"]


def test_recorded_performance_is_a_component(make_cfg, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "reviews")
    cfg = make_cfg("+experiment=folder_recorded", f"task.root={root}")
    run_train(cfg)
    found = children(cfg.tracking.uri, "synque-reviews")
    logged = {r.data.tags["synque.dataset"]: r for r in found}
    assert {k: r.data.metrics["task_performance"] for k, r in logged.items()} == {
        "set0": 0.5,
        "set1": 0.7,
        "set2": 0.6,
    }  # performance.csv as written by make_folder
    for run in logged.values():
        assert run.data.tags["synque.performance_source"] == "recorded"
        assert run.data.tags["synque.seed"] == "none"
        assert run.info.status == "FINISHED"
    run_train(cfg)  # a finished import is not repeated
    assert len(runs(cfg.tracking.uri, "synque-reviews")) == 4


def test_small_cnn_on_an_image_folder(make_cfg, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", n_sets=2, n=24)
    cfg = make_cfg("+experiment=folder_train", f"task.root={root}", "seed=3", *SMALL_CNN)
    run_train(cfg)
    logged = children(cfg.tracking.uri, "synque-pets")
    assert sorted(r.data.tags["synque.dataset"] for r in logged) == ["set0", "set1"]
    client = MlflowClient(cfg.tracking.uri)
    for run in logged:
        metrics, tags = run.data.metrics, run.data.tags
        assert metrics["task_performance"] == metrics["mrr"]
        assert 1 / 3 <= metrics["mrr"] <= 1.0 and 0.0 <= metrics["top1"] <= 1.0  # 3 classes
        assert run.data.params["n_train"] == "21" and run.data.params["n_test"] == "9"
        assert tags["synque.performance_source"] == "trained"
        assert tags["synque.arch"] == "small_cnn" and tags["synque.device"] == "cpu"
        assert tags["synque.seed"] == "3"
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in curve] == [0, 1]
        contexts = {d.tags[0].value for d in run.inputs.dataset_inputs}
        assert contexts == {"synthetic", "test"}


def test_probe_on_a_text_folder(make_cfg, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "reviews", n_sets=2, n=16)
    rows = [{"text": f"{w} film {i}", "label": i % 2} for i, w in enumerate(["good", "bad"] * 4)]
    (root / "real" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = make_cfg(
        "+experiment=folder_train", f"task.root={root}", "train=probe", "train.max_epochs=2"
    )
    run_train(cfg)
    logged = children(cfg.tracking.uri, "synque-reviews")
    assert len(logged) == 2
    for run in logged:
        assert run.data.metrics["task_performance"] == run.data.metrics["f1_macro"]
        assert run.data.tags["synque.backbone"] == "all-MiniLM-L6-v2"
        assert set(run.data.metrics) >= {"accuracy", "f1.0", "f1.1", "train_seconds", "epochs"}


def test_misspelt_setting_fails_before_any_run(make_cfg, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "reviews")
    cfg = make_cfg("+experiment=folder_train", f"task.root={root}", "+train.patiense=3")
    with pytest.raises(SynqueError) as caught:
        run_train(cfg)
    assert str(caught.value) == "train.patiense: unknown key; did you mean patience?"
    assert not (tmp_path / "mlruns").exists()  # checked before the tracking store is touched


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (["train=classifier"], "TextClassifier trains on text examples but task pets holds image"),
        (SMALL_CNN[:1], None),
    ],
)
def test_trainer_and_task_must_match(make_cfg, tmp_path: Path, train, message) -> None:
    root = make_image_folder(tmp_path / "pets", n_sets=1, n=6)
    if message is None:  # an image trainer on an image folder without a labeled test set
        for path in sorted((root / "real" / "test").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (root / "real" / "test").rmdir()
        message = "no labeled real test set for group 'all'"
    cfg = make_cfg("+experiment=folder_train", f"task.root={root}", *train)
    with pytest.raises(SynqueError, match=message):
        run_train(cfg)
    assert not [r for r in runs(cfg.tracking.uri, "synque-pets") if r.info.status != "FINISHED"]

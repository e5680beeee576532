"""Image studies end to end: image folders (both layouts), the paper's layout, digits."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synque.stages.common import load_task
from synque.stages.correlate import run_correlate
from synque.stages.repr import run_repr
from synque.stages.train import run_train
from tests.conftest import needs_data
from tests.data.test_images import build_imagenet_root
from tests.fakes.images import make_image_folder

TINY_CNN = ["train=small_cnn", "train.image_size=16", "train.max_epochs=2", "train.min_epochs=1"]
PIXELS = ["embedder=pixels", "embedder.size=8"]
PROXIES = "proxy=[pad,mmd,mdm,fid,kid,precision,recall,density,coverage]"


def runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=5000) if exp else []


@pytest.mark.parametrize("layout", ["classes", "manifest"])
def test_image_folder_repr_train_correlate(make_cfg, tmp_path: Path, layout: str) -> None:
    root = make_image_folder(tmp_path / "pets", layout=layout, n_sets=4, n=24)
    base = [f"task.root={root}", "seed=5"]
    run_repr(make_cfg("+experiment=folder_repr", *base, *PIXELS, PROXIES))
    run_train(make_cfg("+experiment=folder_train", *base, *TINY_CNN))
    summary = run_correlate(
        make_cfg("+experiment=folder_correlate", *base, "stage.bootstrap=20", "stage.plots=false")
    )
    logged = runs(make_cfg(*base).tracking.uri, "synque-pets")
    assert all(r.info.status == "FINISHED" for r in logged)
    children = [r for r in logged if r.data.tags["synque.role"] == "child"]
    by_stage = {
        s: [r for r in children if r.data.tags["synque.stage"] == s] for s in ("repr", "train")
    }
    assert len(by_stage["repr"]) == 4 and len(by_stage["train"]) == 4
    for run in by_stage["repr"]:
        assert {"pad", "mmd", "fid", "kid", "coverage"} <= set(run.data.metrics)
        assert run.data.tags["synque.embedder"] == "pixels"
    assert {r.data.tags["synque.dataset"] for r in by_stage["train"]} == {
        f"set{i}" for i in range(4)
    }
    assert all("mrr" in r.data.metrics for r in by_stage["train"])
    proxies = set(summary["proxy"].to_list() if hasattr(summary, "to_list") else summary["proxy"])
    assert {"fid", "kid", "precision", "coverage"} <= proxies


@needs_data
def test_paper_image_layout_repr_and_train(make_cfg, tmp_path: Path) -> None:
    roots = [f"task.synthetic_root={tmp_path / 'gen'}", f"task.imagenet_root={tmp_path / 'inet'}"]
    stage_slice = ["task.max_groups=1", "task.max_candidates=2"]  # whole sets: every class
    assert build_imagenet_root(load_task(make_cfg("task=image", *stage_slice, *roots))) > 3000
    run_repr(make_cfg("+experiment=image_repr", *stage_slice, *roots, *PIXELS, "proxy=[mmd,kid]"))
    run_train(make_cfg("+experiment=image_train", *stage_slice, *roots, *TINY_CNN, "seed=42"))
    logged = runs(make_cfg().tracking.uri, "synque-image")
    children = [r for r in logged if r.data.tags["synque.role"] == "child"]
    assert {r.data.tags["synque.stage"] for r in children} == {"repr", "train"}
    assert all(r.info.status == "FINISHED" for r in logged)
    trained = [r for r in children if r.data.tags["synque.stage"] == "train"]
    assert len(trained) == 2 and all(0 < r.data.metrics["mrr"] <= 1 for r in trained)
    assert all(r.data.params["n_test"] == "125" for r in trained)  # 25 for each of 5 classes


@needs_data
def test_paper_image_layout_wrong_root_is_one_line(cli, tmp_path: Path, tracking_uri: str) -> None:
    args = ["+experiment=image_repr", "task.max_groups=1", "task.max_candidates=1", *PIXELS]
    proc = cli(
        *args,
        f"task.synthetic_root={tmp_path}",
        f"task.imagenet_root={tmp_path / 'no'}",
        check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("synque: error")]
    assert len(errors) == 1 and errors[0].endswith("check task.imagenet_root")
    assert "Traceback" not in proc.stderr
    assert all(r.info.status != "RUNNING" for r in runs(tracking_uri, "synque-image"))


@pytest.mark.slow
def test_digits_study_runs_offline_and_reruns_warm(cli, tracking_uri: str) -> None:
    """`+experiment=digits` at its debug size: every stage, then a warm rerun redoing nothing."""
    first = cli("+experiment=digits", "debug=digits")
    assert "Stage times:" in first.stdout
    logged = runs(tracking_uri, "synque-digits")
    assert all(r.info.status == "FINISHED" for r in logged)
    children = [r for r in logged if r.data.tags["synque.role"] == "child"]
    count = {
        s: sum(r.data.tags["synque.stage"] == s for r in children)
        for s in ("generate", "repr", "train")
    }
    assert count == {"generate": 5, "repr": 5 * 3, "train": 5 * 2}
    embedders = {
        r.data.tags["synque.embedder"] for r in children if r.data.tags["synque.stage"] == "repr"
    }
    assert embedders == {"pixels", "efficientnet-lite0"}
    correlate = [r for r in logged if r.data.tags["synque.stage"] == "correlate"]
    # one proxy on two embedders reads back as proxy@embedder
    embedders = ("pixels", "efficientnet-lite0")
    expected = {f"spearman.{p}.{e}" for p in ("fid", "kid") for e in embedders}
    assert expected <= set(correlate[0].data.metrics)
    second = cli("+experiment=digits", "debug=digits")
    assert second.returncode == 0
    again = runs(tracking_uri, "synque-digits")
    new = {
        r.data.tags["synque.stage"]
        for r in again
        if r.info.run_id not in {x.info.run_id for x in logged}
    }
    assert new <= {"correlate", "select"}  # every other stage's config hash was FINISHED

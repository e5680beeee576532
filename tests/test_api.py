"""The study API: the same numbers as correlate, comparisons, one-line errors, any store."""

from __future__ import annotations

import inspect
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from polars.testing import assert_frame_equal

from synque import SynqueError
from synque.api import Study, compare, default_tracking_uri, load_study
from tests.fakes.folders import make_folder

ROOT = Path(__file__).resolve().parent.parent
SETS = ["s1", "s2", "s3", "s4", "s5"]
PERF = {"g1": [0.1, 0.2, 0.3, 0.4, 0.5], "g2": [0.5, 0.3, 0.4, 0.2, 0.1]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A hand-made study of task `toy`: two groups, two seeds, five sets, two embedders.

    On `pixels` PAD rises with performance in every (group, seed), on `effnet` it falls;
    LENS (one judge, no embedder) is logged once per set and seed.
    """
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("synque-toy")
    client.create_experiment("synque-other")

    def child(stage: str, group: str, dataset: str, seed: str, metrics: dict, tags: dict) -> None:
        base = {"synque.role": "child", "synque.stage": stage, "synque.group": group}
        base.update({"synque.dataset": dataset, "synque.seed": seed, **tags})
        run = client.create_run(exp, tags=base)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")

    for group, perf in PERF.items():
        for i, (name, p) in enumerate(zip(SETS, perf, strict=True)):
            child(
                "train",
                group,
                name,
                "none",
                {"task_performance": p},
                {"synque.performance_source": "recorded"},
            )
            for seed in ("1", "2"):
                for embedder, sign in (("pixels", 1), ("effnet", -1)):
                    tags = {"synque.proxy": "pad", "synque.embedder": embedder}
                    child("repr", group, name, seed, {"pad": sign * p + 0.01 * i}, tags)
                lens = {"synque.proxy": "lens", "synque.llm": "judge-x"}
                child("lens", group, name, seed, {"lens": (i * 7 % 5) + int(seed)}, lens)
    return f"sqlite:///{db}"


def test_api_equals_correlate_summary(make_cfg, tracking_uri: str, tmp_path: Path) -> None:
    """A small study run through the stages: the API's tables are correlate's artifacts."""
    from synque.stages.correlate import run_correlate
    from synque.stages.repr import run_repr
    from synque.stages.train import run_train

    root = make_folder(tmp_path / "mini", n_sets=3)
    for s, word in ((3, "fine"), (4, "dull")):
        rows = [f'{{"text": "a {word} film {i}", "label": {i % 2}}}' for i in range(12)]
        (root / "synthetic" / f"set{s}.jsonl").write_text("\n".join(rows))
    perf = [0.5, 0.7, 0.6, 0.4, 0.8]
    (root / "performance.csv").write_text(
        "dataset,task_performance\n" + "".join(f"set{i},{p}\n" for i, p in enumerate(perf))
    )
    for seed in (1, 2):
        run_repr(
            make_cfg(
                "+experiment=folder_repr",
                f"task.root={root}",
                "proxy=[pad,mmd,mdm]",
                f"seed={seed}",
            )
        )
    run_train(make_cfg("+experiment=folder_recorded", f"task.root={root}"))
    run_correlate(
        make_cfg(
            "+experiment=folder_correlate",
            f"task.root={root}",
            "stage.bootstrap=300",
            "stage.plots=false",
        )
    )

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("synque-mini")
    corr = client.search_runs([exp.experiment_id], "tags.`synque.stage` = 'correlate'")[0]
    logged = pl.read_csv(client.download_artifacts(corr.info.run_id, "summary.csv"))
    detail_logged = pl.read_csv(client.download_artifacts(corr.info.run_id, "correlations.csv"))

    study = load_study("mini", tracking_uri)
    detail, summary = study.correlation_tables(bootstrap=300)
    assert summary["proxy"].to_list() == logged["proxy"].to_list()
    assert_frame_equal(summary, logged, check_dtypes=False, check_exact=True)
    assert_frame_equal(detail, detail_logged.cast({"seed": pl.String}), check_exact=True)
    assert_frame_equal(study.correlations(bootstrap=300), logged, check_dtypes=False)
    for row in summary.iter_rows(named=True):
        assert corr.data.metrics[f"spearman.{row['proxy']}"] == pytest.approx(row["spearman"])
    assert study.source == "recorded" and set(study.proxy_names) == {"pad", "mmd", "mdm"}
    assert study.table.height == 3 * 5 * 2  # proxies x sets x seeds
    assert study.table["run_id"].n_unique() == 5 * 2 == int(corr.data.params["input_runs"])

    # correlate restricted to one seed: load_study(seeds=...) and correlations(seeds=...) agree
    run_correlate(
        make_cfg(
            "+experiment=folder_correlate",
            f"task.root={root}",
            "++stage.bootstrap_seed=7",
            "stage.bootstrap=100",
            "stage.seeds=[2]",
            "stage.plots=false",
        )
    )
    newest = client.search_runs(
        [exp.experiment_id], "tags.`synque.stage` = 'correlate'", order_by=["start_time DESC"]
    )[0]
    one_seed = pl.read_csv(client.download_artifacts(newest.info.run_id, "summary.csv"))
    kwargs = {"bootstrap": 100, "bootstrap_seed": 7}
    assert_frame_equal(study.correlations(seeds=[2], **kwargs), one_seed, check_dtypes=False)
    only_2 = load_study("mini", tracking_uri, seeds=[2]).correlations(**kwargs)
    assert_frame_equal(only_2, one_seed, check_dtypes=False)


def test_defaults_are_correlates() -> None:
    """The API's defaults are read from nowhere else: a change to correlate's must show here."""
    stage = OmegaConf.load(ROOT / "configs" / "stage" / "correlate.yaml")
    from synque.stages import correlate

    params = inspect.signature(Study.correlations).parameters
    assert params["bootstrap"].default == stage.bootstrap
    assert params["confidence"].default == stage.confidence
    assert list(params["top_k"].default) == list(stage.top_k)
    # correlate draws its bootstrap from `stage.bootstrap_seed`, 42 when the config has none
    seed = OmegaConf.select(stage, "bootstrap_seed", default=None)
    assert params["bootstrap_seed"].default == (
        seed if seed is not None else correlate.BOOTSTRAP_SEED
    )
    load = inspect.signature(load_study).parameters
    assert list(load["stages"].default) == list(stage.proxy_stages)
    assert load["performance"].default == stage.performance


def test_table_filter_and_subsets(store: str) -> None:
    study = load_study("toy", store)
    assert study.proxy_names == ["lens", "pad@effnet", "pad@pixels"]
    assert "3 proxies, 2 groups, 2 seeds, 10 sets with recorded performance" in repr(study)
    table = study.table
    assert table.columns[:6] == ["proxy", "value", "performance", "dataset", "group", "seed"]
    assert table.height == 3 * 2 * 2 * 5
    assert study.filter(proxies="pad").proxy_names == ["pad@effnet", "pad@pixels"]
    assert study.filter(embedder="pixels", seeds=1).table.height == 2 * 5
    one = study.correlations(proxies=["pad@pixels"], groups="g1", seeds=[1], bootstrap=0)
    assert one["spearman"].to_list() == [pytest.approx(1.0)] and one["n_groups"][0] == 1
    both = study.correlations(bootstrap=0).filter(proxy="pad@effnet")
    assert both["spearman"][0] == pytest.approx(-1.0) and both["n_seeds"][0] == 2
    with pytest.raises(SynqueError, match=r"^study: no proxy values of task toy for seed=\['9'\]"):
        study.filter(seeds=9)


def test_compare_two_embedders_of_one_study(store: str) -> None:
    study = load_study("toy", store)
    pixels, effnet = study.filter(embedder=["pixels", ""]), study.filter(embedder=["effnet", ""])
    table = pixels.compare(effnet, labels=("pixels", "effnet"))
    coefs = ("spearman", "kendall", "pearson")
    assert table.columns == [
        "proxy",
        *(f"{c}_{s}" for c in coefs for s in ("pixels", "effnet", "diff")),
    ]
    assert table["proxy"].to_list() == ["lens", "pad"]
    pad = table.row(1, named=True)
    assert pad["spearman_pixels"] == pytest.approx(1.0)
    assert pad["spearman_effnet"] == pytest.approx(-1.0)
    assert pad["spearman_diff"] == pytest.approx(-2.0)
    lens = table.row(0, named=True)
    assert lens["spearman_diff"] == pytest.approx(0.0)  # the same runs on both sides

    # the same study filtered two ways; a proxy only one side has shows nulls
    by_seed = compare(pixels.filter(seeds=1), pixels.filter(seeds=2), labels=("s1", "s2"))
    assert by_seed["spearman_diff"].to_list() == [pytest.approx(0.0, abs=1e-12)] * 2
    lens_only = compare(pixels.filter(proxies="lens"), pixels)
    pad = lens_only.filter(proxy="pad").row(0, named=True)
    assert pad["spearman_a"] is None and pad["spearman_diff"] is None
    assert pad["spearman_b"] == pytest.approx(1.0)


def test_compare_errors_are_one_line(store: str) -> None:
    study = load_study("toy", store)
    with pytest.raises(SynqueError, match="pad@effnet and pad@pixels are the same proxy") as exc:
        compare(study, study)
    assert "\n" not in str(exc.value)
    with pytest.raises(SynqueError, match="labels"):
        compare(study, study, labels=("x", "x"))
    with pytest.raises(SynqueError, match="share no"):
        compare(study.filter(seeds=1), study.filter(seeds=2), paired=True)


def test_paired_keeps_common_rows(store: str) -> None:
    study = load_study("toy", store).filter(embedder="pixels")
    table = compare(study, study.filter(groups="g1"), paired=True)
    assert table.row(0, named=True)["spearman_diff"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("task", "uri", "message"),
    [
        ("nope", None, r"^study: no task 'nope' in sqlite:///.* \(tasks there: other, toy\)$"),
        ("other", None, r"^study: no proxy runs logged for task other in "),
        ("toy", "missing", r"^study: no MLflow store at .*missing.db \(run a stage first"),
        ("toy", "file:///tmp/x", r"^study: `file:///tmp/x` is a file store"),
    ],
)
def test_errors_are_one_line(
    store: str, tmp_path: Path, task: str, uri: str | None, message: str
) -> None:
    where = {None: store, "missing": str(tmp_path / "missing.db")}.get(uri, uri)
    with pytest.raises(SynqueError, match=message) as exc:
        load_study(task, where)
    assert "\n" not in str(exc.value)


def test_empty_store_is_one_line(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    client = MlflowClient(uri)
    client.search_experiments()  # an initialised store without any synque run
    with pytest.raises(SynqueError, match=r"it holds no synque runs\)$"):
        load_study("sentiment", uri)
    tags = {
        "synque.role": "child",
        "synque.stage": "repr",
        "synque.group": "all",
        "synque.dataset": "a",
        "synque.seed": "1",
        "synque.proxy": "pad",
    }
    run = client.create_run(client.create_experiment("synque-toy"), tags=tags)
    client.log_metric(run.info.run_id, "pad", 0.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    with pytest.raises(SynqueError, match=r"^study: no train runs logged for task toy in ") as exc:
        load_study("toy", uri)
    assert "\n" not in str(exc.value)


def test_uri_forms(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Path(store.removeprefix("sqlite:///"))
    assert db.name == "mlflow.db"  # so its folder is an address too
    assert load_study("toy", db.parent).table.height == load_study("toy", str(db)).table.height
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert default_tracking_uri() == store
    assert load_study("toy").tracking_uri == store  # the environment, when no URI is given
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri() == f"sqlite:///{ROOT}/mlruns/mlflow.db"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.server
def test_same_study_through_a_tracking_server(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http:// URI reads the same table as the sqlite file the server serves."""
    db = tmp_path / "served.db"
    shutil.copy(store.removeprefix("sqlite:///"), db)
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        served = load_study("toy", url)
        local = load_study("toy", store)
        assert_frame_equal(served.table, local.table)
        assert_frame_equal(served.correlations(bootstrap=50), local.correlations(bootstrap=50))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the server is gone: fail now
    with pytest.raises(SynqueError, match=r"^study: cannot read MLflow at http://127.0.0.1"):
        load_study("toy", url)

"""Reading runs back into polars tables: proxy tags, variants, newest run, seeds, sources."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from synque import SynqueError
from synque.tracking.read import logged_proxies, performance_values, proxy_values


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """One store for the module (creating a sqlite schema takes seconds), filled by hand."""
    db = Path(tmp_path_factory.mktemp("store")) / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("synque-toy")
    clock = iter(range(1_000, 100_000, 10))

    def child(stage: str, dataset: str, seed: str, metrics: dict, tags: dict, ok: bool = True):
        run = client.create_run(
            exp,
            start_time=next(clock),
            tags={
                "synque.role": "child",
                "synque.stage": stage,
                "synque.group": "all",
                "synque.dataset": dataset,
                "synque.seed": seed,
                **tags,
            },
        )
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED" if ok else "FAILED")
        return run.info.run_id

    repr_tags = {"synque.proxy": "pad,mmd", "synque.higher_is_better.mmd": "False"}
    for seed in ("1", "2"):
        for i, name in enumerate(("a", "b")):
            metrics = {"pad": 0.1 * i, "mmd": 1.0 + i, "seconds.pad": 3.0}
            child("repr", name, seed, metrics, repr_tags)
    # a forced re-run of (a, seed 1) supersedes the first; a FAILED run is never read
    child("repr", "a", "1", {"pad": 0.7, "mmd": 9.0}, repr_tags)
    child("repr", "b", "1", {"pad": 5.0, "mmd": 5.0}, repr_tags, ok=False)
    # lens logged with two variants: names become lens@<variant>
    for variant in ("debiased", "raw"):
        tags = {"synque.proxy": "lens", "synque.variant.lens": variant}
        child("lens", "a", "1", {"lens": 0.5 if variant == "raw" else 0.6}, tags)
    # fid on two embedders (same variant): names become fid@<embedder>, neither supersedes
    for embedder, value in (("pixels", 3.0), ("efficientnet-lite0", 40.0)):
        tags = {"synque.proxy": "fid", "synque.embedder": embedder}
        child("repr", "a", "3", {"fid": value}, tags)
    # performance: recorded once, trained on two seeds, then trained again for seed 1
    child(
        "train", "a", "none", {"task_performance": 0.8}, {"synque.performance_source": "recorded"}
    )
    child("train", "a", "1", {"task_performance": 0.6}, {})
    child("train", "a", "2", {"task_performance": 0.65}, {})
    child("train", "a", "1", {"task_performance": 0.62}, {})
    child("train", "b", "1", {"f1_macro": 0.3}, {})  # no task_performance: not a result
    return client


def test_proxy_values_are_tagged_metrics_of_the_newest_runs(client: MlflowClient) -> None:
    frame = proxy_values(client, "toy", ["repr"])
    assert frame.columns[0] == "proxy" and frame.schema["seed"] == pl.String
    frame = frame.filter(pl.col("metric") != "fid")
    assert set(frame["proxy"]) == {"pad", "mmd"}  # seconds.pad is not a proxy
    assert frame.height == 2 * 2 * 2
    rows = frame.sort("proxy", "dataset", "seed").rows_by_key(
        ["proxy", "dataset", "seed"], named=True, unique=True
    )
    assert rows[("mmd", "a", "1")]["value"] == 9.0  # the re-run wins
    assert rows[("pad", "b", "1")]["value"] == pytest.approx(0.1)  # the FAILED run does not
    assert rows[("mmd", "b", "2")]["higher_is_better"] is False
    assert rows[("pad", "b", "2")]["higher_is_better"] is True


def test_several_variants_get_their_own_proxy_name(client: MlflowClient) -> None:
    frame = proxy_values(client, "toy", ["lens"]).sort("proxy")
    assert frame["proxy"].to_list() == ["lens@debiased", "lens@raw"]
    assert frame["value"].to_list() == [0.6, 0.5]
    assert frame["metric"].to_list() == ["lens", "lens"]


def test_one_proxy_on_several_embedders_gets_a_name_per_embedder(client: MlflowClient) -> None:
    frame = proxy_values(client, "toy", ["repr"]).filter(pl.col("metric") == "fid").sort("proxy")
    assert frame["proxy"].to_list() == ["fid@efficientnet-lite0", "fid@pixels"]
    assert frame["value"].to_list() == [40.0, 3.0]


def test_logged_proxies_filters_seeds_and_says_what_is_missing(client: MlflowClient) -> None:
    cfg = OmegaConf.create({"proxy_stages": ["repr", "lens"], "seeds": [2]})
    frame = logged_proxies(client, "toy", cfg, "select")
    assert set(frame["seed"]) == {"2"} and frame.height == 4
    with pytest.raises(SynqueError, match="select: no proxy runs for seeds"):
        logged_proxies(
            client, "toy", OmegaConf.create({"proxy_stages": ["repr"], "seeds": [7]}), "select"
        )
    with pytest.raises(SynqueError, match="no proxy runs logged for task absent"):
        logged_proxies(client, "absent", cfg, "correlate")


def test_performance_values_per_source_newest_run(client: MlflowClient) -> None:
    frame = performance_values(client, "toy").sort("source", "seed")
    assert frame.select("source", "dataset", "seed", "value").rows() == [
        ("recorded", "a", "none", 0.8),
        ("trained", "a", "1", 0.62),
        ("trained", "a", "2", 0.65),
    ]
    empty = performance_values(client, "absent")
    assert empty.is_empty() and "value" in empty.columns

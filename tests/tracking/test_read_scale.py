"""Reading a large study back: paged searches give the same tables as reading run by run.

Why: correlate and select read every child run of a task; with thousands of runs a search that
stopped at its first page, or a per-run call, would silently drop runs or take minutes.  The
runs are written in bulk SQL through MLflow's own SqlAlchemyStore tables (`bulk_log_runs`,
also used by bench/bench_scale.py), because the client logs about ten runs a second here.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from polars.testing import assert_frame_equal

from synque.tracking import read
from synque.tracking.read import performance_values, proxy_values
from synque.tracking.store import experiment_name

#: What each repr run logs as proxies (and a timing and a noise metric that are not proxies).
REPR_PROXIES = ("pad", "mmd", "mdm", "mauve")
STAGES = ("repr", "lens", "train")


@dataclass(frozen=True)
class Study:
    """Shape of a synthetic study: every (group, dataset, seed) has a repr, lens, train run."""

    groups: int
    datasets: int
    seeds: int

    @property
    def runs(self) -> int:
        """Child runs written: three stages per cell, two more (old, FAILED) every 37th."""
        cells = self.groups * self.datasets * self.seeds
        return 3 * cells + 2 * math.ceil(cells / 37)


def _cells(study: Study) -> Iterator[tuple[str, str, str]]:
    for g in range(study.groups):
        for d in range(study.datasets):
            for s in range(study.seeds):
                yield f"g{g}", f"g{g}-set{d}", str(42 + s)


def _stage_metrics(stage: str, rng: np.random.Generator) -> tuple[dict, dict]:
    """(metrics, stage tags) of one child run, shaped like what synque's stages log."""
    if stage == "repr":
        metrics = {name: float(rng.normal()) for name in REPR_PROXIES}
        metrics |= {f"seconds.{name}": 0.5 for name in REPR_PROXIES}
        metrics["mmd.std"] = 0.01  # proxy noise: listed in synque.proxy, never a proxy itself
        tags = {"synque.proxy": ",".join([*REPR_PROXIES, "mmd.std"]), "synque.embedder": "m"}
        tags |= {f"synque.higher_is_better.{n}": str(n == "pad") for n in REPR_PROXIES}
        tags |= {f"synque.variant.{n}": "default" for n in REPR_PROXIES}
        return metrics, tags
    if stage == "lens":
        metrics = {"lens": float(rng.uniform()), "lens_raw": 0.0, "llm_calls": 40.0}
        return metrics, {"synque.proxy": "lens", "synque.llm": "smol"}
    return {"task_performance": float(rng.uniform()), "f1_macro": 0.5}, {}


def _run_rows(
    study: Study, experiment_id: int, artifact_root: str, seed: int
) -> dict[str, list[dict]]:
    """Rows of MLflow's runs, tags, metrics and latest_metrics tables for a study.

    Children carry tags and metrics only (synque logs params on the parent).  Every 37th
    (group, dataset, seed) also has an older repr run (superseded) and a FAILED one, which a
    reader must not use.
    """
    rng = np.random.default_rng(seed)
    tables: dict[str, list[dict]] = {"runs": [], "tags": [], "metrics": []}
    clock = 1_700_000_000_000
    base = {"synque.role": "child", "synque.task": "big", "mlflow.user": "bench"}
    base |= {"mlflow.source.type": "LOCAL", "mlflow.source.name": "synque.run"}
    base |= {"synque.host": "bench", "synque.pid": "1", "synque.sweep_id": "20260101-x"}
    for cell, (group, dataset, run_seed) in enumerate(_cells(study)):
        extra = [("repr", "FINISHED", -(10**6)), ("repr", "FAILED", 0)] if cell % 37 == 0 else []
        for stage, status, shift in [*extra, *((s, "FINISHED", 0) for s in STAGES)]:
            run_id = uuid.uuid4().hex
            clock += 7
            tables["runs"].append(
                {
                    "run_uuid": run_id,
                    "name": f"{stage}-{dataset}",
                    "source_type": "LOCAL",
                    "source_name": "synque",
                    "entry_point_name": "",
                    "user_id": "bench",
                    "status": status,
                    "start_time": clock + shift,
                    "end_time": clock + 5,
                    "source_version": "",
                    "lifecycle_stage": "active",
                    "artifact_uri": f"{artifact_root}/{experiment_id}/{run_id}/artifacts",
                    "experiment_id": experiment_id,
                }
            )
            metrics, stage_tags = _stage_metrics(stage, rng)
            tags = base | stage_tags
            tags |= {"synque.stage": stage, "synque.group": group, "synque.dataset": dataset}
            tags |= {"synque.seed": run_seed, "mlflow.runName": f"{stage}-{dataset}"}
            tags |= {"synque.config_hash": run_id, "synque.job_hash": f"{stage}{run_seed}"}
            tables["tags"] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
            tables["metrics"] += [
                {"key": k, "value": v, "timestamp": clock, "step": 0, "is_nan": False}
                | {"run_uuid": run_id}
                for k, v in metrics.items()
            ]
    tables["latest_metrics"] = tables["metrics"]
    return tables


def bulk_log_runs(uri: str, experiment: str, study: Study, seed: int = 0) -> str:
    """Write a finished study into the store at `uri` in one transaction; its experiment id.

    Why MLflow's own tables and engine: the rows are then exactly what the client would have
    written (the store creates or migrates the schema itself), at ~10^4 runs per second
    instead of ~10 through the client.  `uri` is a database URI (sqlite:///..., postgresql://...).
    """
    from mlflow.store.tracking.dbmodels import models
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(uri, str(Path("/tmp") / "synque-bulk-artifacts"))
    exp = store.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else store.create_experiment(experiment)
    tables = _run_rows(study, int(experiment_id), "/tmp/synque-bulk-artifacts", seed)
    model = {
        "runs": models.SqlRun,
        "tags": models.SqlTag,
        "metrics": models.SqlMetric,
        "latest_metrics": models.SqlLatestMetric,
    }
    with store.engine.begin() as conn:
        for name, rows in tables.items():
            conn.execute(model[name].__table__.insert(), rows)
    store.engine.dispose()
    return str(experiment_id)


#: 200 (group, dataset, seed) cells: 600 finished runs plus 6 superseded and 6 FAILED
#: (bench/bench_scale.py writes 10,000; the ORM search is what makes a larger test slow).
STUDY = Study(groups=2, datasets=20, seeds=5)
PAGE = 80  # three pages per stage


@pytest.fixture(scope="module")
def big() -> Iterator[MlflowClient]:
    """A sqlite store holding STUDY (schema creation and the bulk write: a few seconds)."""
    with tempfile.TemporaryDirectory(prefix="synque-big-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        bulk_log_runs(uri, experiment_name("big"), STUDY)
        yield MlflowClient(uri)


def _paged_search(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(proxies, performance, search calls) read through the paged search, not SQL."""
    calls = []
    search = client.search_runs

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("page_token"))
        return search(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(read, "_sql_store", lambda _: None)
        patch.setattr(read, "PAGE_SIZE", PAGE)
        patch.setattr(client, "search_runs", counted)
        proxies = proxy_values(client, "big", ["repr", "lens"])
        performance = performance_values(client, "big")
    return proxies, performance, len(calls)


def test_sql_read_equals_paged_search(big: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read._sql_store(big) is not None  # a sqlite URI takes the SQL route
    proxies, performance = (
        proxy_values(big, "big", ["repr", "lens"]),
        performance_values(big, "big"),
    )
    searched, searched_perf, calls = _paged_search(big, monkeypatch)
    cells = STUDY.groups * STUDY.datasets * STUDY.seeds
    finished_repr = cells + math.ceil(cells / 37)  # the superseded runs are FINISHED too
    assert calls == math.ceil(finished_repr / PAGE) + 2 * math.ceil(cells / PAGE)
    assert proxies.height == cells * (len(REPR_PROXIES) + 1)  # newest run only, no mmd.std
    assert set(proxies["proxy"]) == {*REPR_PROXIES, "lens"}
    assert performance.height == cells
    assert_frame_equal(proxies, searched)  # same rows in the same order
    assert_frame_equal(performance, searched_perf)


def test_values_equal_a_per_run_read(big: MlflowClient) -> None:
    proxies = proxy_values(big, "big", ["repr", "lens"])
    exp = big.get_experiment_by_name(experiment_name("big"))
    failed = big.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")
    assert len(failed) == math.ceil(STUDY.groups * STUDY.datasets * STUDY.seeds / 37)
    assert not set(proxies["run_id"]) & {run.info.run_id for run in failed}
    sample = proxies["run_id"].unique().sort().gather_every(10)  # 40 runs, one call each
    for run_id in sample:
        run = big.get_run(run_id)
        rows = proxies.filter(pl.col("run_id") == run_id)
        assert dict(zip(rows["metric"], rows["value"], strict=True)) == {
            m: run.data.metrics[m] for m in rows["metric"]
        }
        listed = run.data.tags["synque.proxy"].split(",")
        assert sorted(rows["metric"]) == sorted(m for m in listed if not m.endswith(".std"))
        assert set(rows["seed"]) == {run.data.tags["synque.seed"]}
        assert set(rows["start_time"]) == {run.info.start_time}

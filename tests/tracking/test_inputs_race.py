"""Two jobs of a server-backed sweep register the same real sample at once."""

from __future__ import annotations

import mlflow
import polars as pl
import pytest
from mlflow.exceptions import MlflowException, RestException

from synque.tracking import inputs
from synque.tracking.inputs import log_dataset

#: What a tracking server on PostgreSQL answered the job that lost this race in CI.
LOST_RACE = (
    "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "
    '"dataset_pk" DETAIL:  Key (experiment_id, name, digest)=(1, real, 94fc0acddff74044) '
    "already exists."
)


def _frame() -> pl.DataFrame:
    return pl.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})


def test_the_job_that_loses_the_race_links_the_winners_dataset(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.create_experiment("synque-inputs-race")
    with mlflow.start_run(experiment_id=experiment_id) as rival:
        log_dataset(_frame(), name="real", context="real", source="/data/real.json")

    real_log_input = mlflow.log_input
    calls: list[str] = []

    def lose_first(dataset, context=None, **kwargs):
        calls.append(context)
        if len(calls) == 1:
            raise RestException({"error_code": "BAD_REQUEST", "message": LOST_RACE})
        return real_log_input(dataset, context=context, **kwargs)

    monkeypatch.setattr(inputs.mlflow, "log_input", lose_first)
    with mlflow.start_run(experiment_id=experiment_id) as late:
        log_dataset(_frame(), name="real", context="real", source="/data/real.json")

    assert calls == ["real", "real"]
    client = mlflow.MlflowClient(tracking_uri)
    late_inputs = client.get_run(late.info.run_id).inputs.dataset_inputs
    rival_inputs = client.get_run(rival.info.run_id).inputs.dataset_inputs
    assert [d.dataset.name for d in late_inputs] == ["real"]
    assert late_inputs[0].dataset.digest == rival_inputs[0].dataset.digest


def test_other_store_errors_are_not_retried(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    calls = []

    def refuse(dataset, context=None, **kwargs):
        calls.append(context)
        raise MlflowException("permission denied on experiment 1")

    monkeypatch.setattr(inputs.mlflow, "log_input", refuse)
    with mlflow.start_run(), pytest.raises(MlflowException, match="permission denied"):
        log_dataset(_frame(), name="real", context="real", source="/data/real.json")
    assert calls == ["real"]

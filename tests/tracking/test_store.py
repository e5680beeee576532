"""Experiment creation when several jobs race for the same name."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from synque.tracking.store import ensure_experiment


class LateClient(MlflowClient):
    """Sees no experiment on its reads until another job has created it.

    This is what a server-backed sweep looks like from one job: both jobs read
    "absent", the other job's create lands first, and ours hits the unique name.
    """

    def __init__(self, uri: str, rival: MlflowClient) -> None:
        super().__init__(uri)
        self.rival = rival
        self.blind_reads = 2

    def get_experiment_by_name(self, name: str):
        if self.blind_reads:
            self.blind_reads -= 1
            if self.blind_reads == 0:
                self.rival.create_experiment(name)
            return None
        return super().get_experiment_by_name(name)


def test_losing_the_race_for_a_name_takes_the_winners_experiment(
    tracking_uri: str, tmp_path: Path
) -> None:
    tmp_path.joinpath("mlruns").mkdir(exist_ok=True)
    rival = MlflowClient(tracking_uri)
    late = LateClient(tracking_uri, rival)
    experiment_id = ensure_experiment(late, "synque-raced")
    assert experiment_id == rival.get_experiment_by_name("synque-raced").experiment_id
    assert len(rival.search_experiments(filter_string="name = 'synque-raced'")) == 1

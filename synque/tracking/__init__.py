"""MLflow tracking per DESIGN's schema: the store, the run lifecycle, inputs, reading back."""

from synque.tracking.inputs import content_digest, log_dataset, log_inputs, log_table
from synque.tracking.lifecycle import StageRun, log_llm_usage
from synque.tracking.store import (
    TAG,
    connect,
    ensure_experiment,
    experiment_name,
    resolve_tracking_uri,
)

__all__ = [
    "TAG",
    "StageRun",
    "connect",
    "content_digest",
    "ensure_experiment",
    "experiment_name",
    "log_dataset",
    "log_inputs",
    "log_llm_usage",
    "log_table",
    "resolve_tracking_uri",
]

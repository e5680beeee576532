"""MLflow tracking per DESIGN's schema: the store, the run lifecycle, inputs, reading back.

Names are imported on first use: Hydra builds `synque.tracking.sweep.SweepCallback` in the
launching process of every command, which should not pay for importing MLflow (~2 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synque.tracking.inputs import content_digest, log_dataset, log_inputs, log_table
    from synque.tracking.lifecycle import StageRun, log_llm_usage
    from synque.tracking.store import (
        TAG,
        connect,
        ensure_experiment,
        experiment_name,
        resolve_tracking_uri,
    )

_WHERE = {
    "TAG": "store",
    "StageRun": "lifecycle",
    "connect": "store",
    "content_digest": "inputs",
    "ensure_experiment": "store",
    "experiment_name": "store",
    "log_dataset": "inputs",
    "log_inputs": "inputs",
    "log_llm_usage": "lifecycle",
    "log_table": "inputs",
    "resolve_tracking_uri": "store",
}

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


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value

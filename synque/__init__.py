"""synque: experiment tracking for Synthetic dataset Quality Estimation (SynQuE)."""

from __future__ import annotations

import os


class SynqueError(RuntimeError):
    """An error the user can fix (bad input, bad config): printed as one line, exit code 1."""


# Everything synque runs is offline by design; set this before any library reads it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Busy-waiting OpenMP threads collapse torch throughput on a shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["SynqueError"]
__version__ = "0.2.0"

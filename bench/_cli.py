"""Shared by the benchmark scripts: run the synque CLI as a user would, timed."""

from __future__ import annotations

import subprocess
import sys
import time


def run_cli(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of `python -m synque.run ARGS` (output discarded, failure raises)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "synque.run", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start

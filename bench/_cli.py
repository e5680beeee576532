"""Shared by the benchmark scripts: run the synque CLI as a user would, timed."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], env: dict[str, str], tree: Path | None = None) -> float:
    """Wall seconds of `python -m synque.run ARGS` (output discarded, failure raises).

    `tree` runs another checkout of synque (e.g. an older commit) with the same Python.
    """
    start = time.perf_counter()
    if tree is not None:
        env = {**env, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, "-m", "synque.run", *args],
        env=env,
        cwd=tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"synque.run {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A temporary git worktree of `rev` (removed afterwards), to benchmark an older synque."""
    with tempfile.TemporaryDirectory(prefix="synque-rev-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                check=False,
                capture_output=True,
            )

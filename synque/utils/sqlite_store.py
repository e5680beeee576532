"""One sqlite base for synque's persistent caches (embeddings, LLM responses).

Why one base: both caches must survive SIGKILL of the writer and be shared by parallel jobs.
WAL mode lets several processes share one file (one writer at a time, readers never
blocked); every write is its own committed transaction, so a rerun never repeats finished
work.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any


class SqliteStore:
    """A sqlite file opened in WAL mode, one connection guarded by a lock (thread-safe)."""

    #: CREATE statements run on open (subclasses set their schema here).
    schema: tuple[str, ...] = ()

    def __init__(self, path: Path | str, timeout: float = 600.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for statement in self.schema:
            self._conn.execute(statement)

    def execute(self, sql: str, params: tuple | list = ()) -> list[tuple[Any, ...]]:
        """Run one statement (autocommitted) and return its rows."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement for many rows in a single committed transaction."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(sql, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

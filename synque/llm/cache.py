"""The persistent LLM response cache and the keys that address it.

Why keys are fixed here: a cache file is shared by every job and outlives code changes, so
the key of a request (and the row format) must stay byte-identical across releases; an
existing cache must still hit after any refactoring. Keys hash the JSON of the message
structure (string content or lists of typed parts alike) with sorted keys, never secrets;
an image part enters by the digest of its bytes, never by its path (`images.key_view`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from synque.llm.images import key_view
from synque.utils.sqlite_store import SqliteStore

CACHE_FILE = "llm_cache.sqlite"


def _sha(obj: Any) -> str:
    """Stable hash of JSON-able data (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def request_key(
    kind: str, model: str, op: str, messages: Sequence[Any], params: Mapping[str, Any]
) -> str:
    """Cache key: backend kind, model, operation, messages and sampling params (never secrets)."""
    return _sha({"kind": kind, "model": model, "op": op, "messages": key_view(messages), **params})


def lookup_key(op: str, messages: Sequence[Any], choices: Sequence[str] | None = None) -> str:
    """Backend-independent key (op, messages, choices) that `replay` matches recordings on."""
    return _sha({"op": op, "messages": key_view(messages), "choices": list(choices or [])})


class ResponseCache(SqliteStore):
    """sqlite response store (WAL; every put is its own committed transaction).

    A committed row survives SIGKILL of the writer, so a rerun never repeats a finished call.
    """

    schema = (
        "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, lookup TEXT, kind TEXT,"
        " model TEXT, op TEXT, payload TEXT NOT NULL, created REAL)",
        "CREATE INDEX IF NOT EXISTS responses_lookup ON responses(lookup)",
    )

    def __init__(self, path: Path | str, timeout: float = 60.0) -> None:
        super().__init__(path, timeout)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored payload of `key` or None."""
        rows = self.execute("SELECT payload FROM responses WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def put(
        self,
        key: str,
        payload: Mapping[str, Any],
        *,
        lookup: str = "",
        kind: str = "",
        model: str = "",
        op: str = "",
    ) -> None:
        """Store and commit one response immediately."""
        blob = json.dumps(dict(payload), ensure_ascii=False)
        self.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, lookup, kind, model, op, blob, time.time()),
        )

    def __len__(self) -> int:
        return int(self.execute("SELECT COUNT(*) FROM responses")[0][0])


def iter_cache_rows(path: Path | str) -> Iterator[dict[str, Any]]:
    """Rows of a response cache file, oldest first, opened read-only (replay, inspection)."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        for key, lookup, kind, model, op, payload, created in conn.execute(
            "SELECT key, lookup, kind, model, op, payload, created FROM responses ORDER BY created"
        ):
            yield {
                "key": key,
                "lookup": lookup,
                "kind": kind,
                "model": model,
                "op": op,
                "payload": json.loads(payload),
                "created": created,
            }
    finally:
        conn.close()

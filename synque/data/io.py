"""File reading and writing with one-line errors that name the file (and the line) at fault.

Tables are read with polars; a file polars cannot parse is re-read line by line only to say
*where* it is broken, so the fast path stays fast and the error stays precise.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from synque import SynqueError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_json(path: Path) -> Any:
    """A JSON document; a missing or malformed file is a one-line `SynqueError`."""
    if not path.is_file():
        raise SynqueError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SynqueError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError:
        raise SynqueError(f"{path}: not UTF-8 text") from None


def _jsonl_error(path: Path) -> SynqueError:
    """The first malformed line of a JSONL file, as an error naming it."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                return SynqueError(
                    f"{path}: malformed JSON at line {lineno} column {exc.colno}: {exc.msg}"
                )
            if not isinstance(value, dict):
                return SynqueError(f"{path}: line {lineno} is not a JSON object")
    return SynqueError(f"{path}: unreadable JSONL (mixed value types across lines?)")


def read_table(path: Path) -> pl.DataFrame:
    """A JSONL, JSON (list of objects, or {id: text}), CSV or Parquet file as a polars frame."""
    if not path.is_file():
        raise SynqueError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = read_json(path)
        if isinstance(rows, dict):  # {id: text} files (web intents)
            rows = [{"id": k, "text": v} for k, v in rows.items()]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise SynqueError(f"{path}: expected a list of objects (one example each)")
        return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()
    try:
        if suffix == ".jsonl":
            if path.stat().st_size == 0:
                return pl.DataFrame()
            return pl.read_ndjson(path, infer_schema_length=None)
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=10_000)
        if suffix == ".parquet":
            return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        if suffix == ".jsonl":
            raise _jsonl_error(path) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise SynqueError(f"{path}: malformed {kind}: {first[:200]}") from None
    raise SynqueError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)})")


def read_csv(path: Path, columns: Iterable[str]) -> pl.DataFrame:
    """A non-empty CSV holding at least `columns`."""
    frame = read_table(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SynqueError(f"{path}: missing column(s) {', '.join(missing)}")
    if frame.is_empty():
        raise SynqueError(f"{path}: no rows")
    return frame


def find_data_file(folder: Path, stem: str) -> Path | None:
    """`folder/stem.<suffix>` for the first supported suffix that exists."""
    for suffix in SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def write_jsonl_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write JSONL through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

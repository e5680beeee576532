"""Prompt -> completion pairs of a generative task, from templates in the train config.

A record (one row of a candidate set or of the real test set) becomes a prompt and the
completion the model should learn to write, by `{field}` templates: `prompt: "{question}"`,
`completion: "{SQL}"`. `{schema}` in a prompt is the CREATE statements of the record's SQLite
database (optionally with a few rows per table), read once per database. Which database a
record belongs to: its `db_id` field, else the group (text2sql groups are databases), else the
only database there is; databases follow BIRD's layout under one root folder.
"""

from __future__ import annotations

import sqlite3
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from synque import SynqueError
from synque.data.task import NO_GROUP
from synque.train.sql_eval import bird_database, connect_read_only

SCHEMA_FIELD = "schema"


def template_fields(template: str) -> list[str]:
    """The `{field}` names of a template, in order, once each."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return list(dict.fromkeys(names))


@lru_cache(maxsize=64)
def database_schema(path: str, rows: int = 0) -> str:
    """CREATE statements of a database's tables (creation order), each followed by up to
    `rows` example rows as SQL comments. Read-only; cached per (file, rows)."""
    conn = connect_read_only(Path(path))
    try:
        tables = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND sql IS NOT NULL ORDER BY rowid"
        ).fetchall()
        parts = []
        for name, sql in tables:
            part = sql.strip()
            if rows > 0:
                quoted = '"' + name.replace('"', '""') + '"'
                cursor = conn.execute(f"SELECT * FROM {quoted} LIMIT {int(rows)}")
                columns = [d[0] for d in cursor.description]
                sample = cursor.fetchall()
                if sample:
                    lines = [", ".join(columns)] + [", ".join(map(repr, r)) for r in sample]
                    part += "\n/* " + "\n   ".join(lines) + " */"
            parts.append(part)
        return "\n\n".join(parts)
    finally:
        conn.close()


@dataclass(frozen=True)
class Databases:
    """Where each record's SQLite database is: BIRD's layout under `root` (None: no databases).

    `setting` is what a user changes to point elsewhere (it starts every error message).
    """

    root: Path | None
    setting: str = "task.db_root"

    def ids(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if bird_database(self.root, p.name).is_file()
        )

    def db_id(self, record: Mapping[str, Any], group: str) -> str | None:
        """The record's `db_id`, else the group's name, else the one database under the root."""
        value = record.get("db_id")
        if value not in (None, ""):
            return str(value)
        if group != NO_GROUP:
            return group
        ids = self.ids()
        return ids[0] if len(ids) == 1 else None

    def path(self, record: Mapping[str, Any], group: str) -> Path | None:
        db_id = self.db_id(record, group)
        return bird_database(self.root, db_id) if self.root is not None and db_id else None


@dataclass(frozen=True)
class PromptTemplate:
    """`prompt` and `completion` templates over a record's fields (+ `{schema}`), and an
    optional system message for chat models."""

    prompt: str
    completion: str
    system: str | None = None

    @property
    def needs_schema(self) -> bool:
        return SCHEMA_FIELD in template_fields(self.prompt)

    def check(self, frame: pl.DataFrame, source: str | Path, completion: bool = True) -> None:
        """One line naming the file and the first field a template needs that it lacks."""
        wanted = template_fields(self.prompt) + (
            template_fields(self.completion) if completion else []
        )
        missing = [f for f in wanted if f != SCHEMA_FIELD and f not in frame.columns]
        if missing:
            raise SynqueError(
                f"{source}: record 0 has no field '{missing[0]}' for the prompt template "
                f"(fields: {', '.join(frame.columns) or 'none'}; set train.prompt and "
                "train.completion to this task's fields)"
            )

    def render(self, record: Mapping[str, Any], schema: str | None = None) -> tuple[str, str]:
        """(prompt, completion) of one record; `schema` fills `{schema}`."""
        values = {k: "" if v is None else str(v) for k, v in record.items()}
        if schema is not None:
            values[SCHEMA_FIELD] = schema
        return (
            self.prompt.format_map(values).strip(),
            self.completion.format_map(values).strip(),
        )


def render_records(
    template: PromptTemplate,
    frame: pl.DataFrame,
    group: str,
    databases: Databases,
    schema_rows: int = 0,
) -> tuple[list[str], list[str], list[Path | None]]:
    """Prompts, completions and database paths (None without databases) of a frame's records."""
    prompts, completions, dbs = [], [], []
    for record in frame.iter_rows(named=True):
        db = databases.path(record, group)
        schema = None
        if template.needs_schema:
            if db is None or not db.is_file():
                raise SynqueError(
                    f"{databases.setting}: no SQLite database for record {len(prompts)} of "
                    f"group '{group}' (expected {db or '<db_root>/<db_id>/<db_id>.sqlite'}); "
                    "the prompt shows its {schema}"
                )
            try:
                schema = database_schema(str(db), schema_rows)
            except sqlite3.Error as err:
                raise SynqueError(f"{db}: cannot read the schema ({err})") from None
        prompt, completion = template.render(record, schema)
        prompts.append(prompt)
        completions.append(completion)
        dbs.append(db)
    return prompts, completions, dbs

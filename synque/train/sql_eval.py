"""Execution accuracy as BIRD computes it, and the string scores of generative tasks.

A predicted SQL query counts as correct when it runs on the question's database and returns
the same SET of rows as the gold query: row order and repeated rows are ignored (BIRD compares
`set(fetchall())`). A query that fails, or runs past the time limit, is wrong; so is a question
whose gold query fails (BIRD's evaluator scores it 0 too; we also count those, because they
mean the database does not match the data set).

Every connection is read-only (`file:...?mode=ro` URI plus `PRAGMA query_only`), so a
generated `DROP TABLE` cannot change a database that other runs evaluate on. The time limit is a
SQLite progress handler that aborts the statement once its deadline passes: it works inside
long scans and sorts, needs no extra thread per query and leaves the connection usable.
Databases follow BIRD's layout, `<db_root>/<db_id>/<db_id>.sqlite`.
"""

from __future__ import annotations

import difflib
import re
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

#: SQLite virtual-machine steps between two deadline checks (~0.1 ms of work each).
PROGRESS_STEPS = 1000
TIMEOUT = "timeout"


@dataclass(frozen=True)
class Execution:
    """What one query returned: its distinct rows, or why it has none (`error`)."""

    rows: frozenset[tuple] | None
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """One predicted query judged against its gold query."""

    correct: bool
    error: str | None = None  # of the prediction: "timeout" or the SQLite message
    gold_error: str | None = None


def bird_database(db_root: Path, db_id: str) -> Path:
    """`<db_root>/<db_id>/<db_id>.sqlite` (BIRD's layout); the file need not exist."""
    return Path(db_root) / db_id / f"{db_id}.sqlite"


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: `mode=ro` URI (and `query_only` as a second lock)."""
    path = Path(path)
    if not path.is_file():  # mode=ro would create nothing but fail with an opaque message
        raise FileNotFoundError(f"no SQLite database at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


def run_query(conn: sqlite3.Connection, sql: str, timeout: float) -> Execution:
    """Rows of `sql` as a set, or the error; aborted after `timeout` seconds."""
    start = time.monotonic()
    deadline = start + timeout
    timed_out = False

    def past_deadline() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return 1 if timed_out else 0  # non-zero aborts the statement ("interrupted")

    conn.set_progress_handler(past_deadline, PROGRESS_STEPS)
    try:
        rows = frozenset(tuple(row) for row in conn.execute(sql).fetchall())
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as err:
        # Warning: several statements in one string; ValueError: NUL characters in the text
        error = TIMEOUT if timed_out else (str(err).splitlines() or [type(err).__name__])[0]
        return Execution(None, error, time.monotonic() - start)
    finally:
        conn.set_progress_handler(None, PROGRESS_STEPS)
    return Execution(rows, None, time.monotonic() - start)


class ExecutionEvaluator:
    """Judges (database, predicted, gold) triples; gold results are cached per evaluator.

    Why a cache: every candidate set of a group is tested on the same gold queries, so a job
    runs each gold query once. Why threads: Python's sqlite3 releases the GIL while SQLite
    works, so `workers` > 1 runs queries in parallel (each worker opens its own connections).
    """

    def __init__(self, timeout: float = 30.0, workers: int = 1) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.timeout = float(timeout)
        self.workers = max(1, int(workers))
        self._gold: dict[tuple[str, str], Execution] = {}
        self._lock = Lock()
        self.seconds = 0.0  # time spent on predicted queries, connecting included (queries/s)
        self.queries = 0

    def execute(self, db: Path, sql: str) -> Execution:
        """Run one query on a fresh read-only connection."""
        try:
            conn = connect_read_only(db)
        except (OSError, sqlite3.Error) as err:
            return Execution(None, str(err))
        try:
            return run_query(conn, sql, self.timeout)
        finally:
            conn.close()

    def gold(self, db: Path, sql: str) -> Execution:
        key = (str(db), sql)
        with self._lock:
            cached = self._gold.get(key)
        if cached is None:
            cached = self.execute(db, sql)
            with self._lock:
                self._gold[key] = cached
        return cached

    def judge(self, db: Path, predicted: str, gold: str) -> Verdict:
        """BIRD's rule: correct iff both run and `set(predicted rows) == set(gold rows)`."""
        truth = self.gold(db, gold)
        start = time.monotonic()
        guess = self.execute(db, predicted)
        with self._lock:
            self.seconds += time.monotonic() - start  # connection included
            self.queries += 1
        if guess.rows is None:
            return Verdict(False, guess.error, truth.error)
        if truth.rows is None:
            return Verdict(False, None, truth.error)
        return Verdict(guess.rows == truth.rows)

    def judge_all(self, items: Sequence[tuple[Path, str, str]]) -> list[Verdict]:
        """`judge` over (database, predicted, gold) triples, in order."""
        if self.workers == 1 or len(items) < 2:
            return [self.judge(*item) for item in items]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda item: self.judge(*item), items))


def execution_accuracy(verdicts: Sequence[Verdict]) -> float:
    """Share of correct verdicts (0 for none)."""
    return sum(v.correct for v in verdicts) / len(verdicts) if verdicts else 0.0


_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)(?:```|$)", re.IGNORECASE | re.DOTALL)


def extract_sql(text: str) -> str:
    """The first SQL statement of a model's answer: inside a code fence if there is one, cut at
    the first `;` that ends a complete statement (a `;` inside a string literal does not)."""
    match = _FENCE.search(text)
    sql = (match.group(1) if match else text).strip()
    for i, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[: i + 1]):
            return sql[:i].strip()
    return sql


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed, a trailing `;` dropped: what string scores compare."""
    return " ".join(text.lower().split()).rstrip(";").strip()


def exact_match(predicted: str, gold: str) -> bool:
    """Equal up to whitespace (case and everything else counts: string literals are data)."""
    return " ".join(predicted.split()) == " ".join(gold.split())


def similarity(predicted: str, gold: str) -> float:
    """difflib's ratio (0..1, 1 = identical) of the normalised strings."""
    return difflib.SequenceMatcher(None, normalise(predicted), normalise(gold)).ratio()

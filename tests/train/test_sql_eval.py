"""Execution accuracy as BIRD computes it, on hand-made cases over a small SQLite database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from synque.train.sql_eval import (
    ExecutionEvaluator,
    bird_database,
    connect_read_only,
    exact_match,
    execution_accuracy,
    extract_sql,
    similarity,
)
from tests.fakes.sql import ITEMS, make_database

SLOW_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT COUNT(*) FROM c"
)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dbs")
    return make_database(bird_database(root, "shop"))


def test_bird_layout(tmp_path: Path) -> None:
    assert bird_database(tmp_path, "shop") == tmp_path / "shop" / "shop.sqlite"


@pytest.mark.parametrize(
    ("predicted", "gold", "correct"),
    [
        # the same rows in another order: a set comparison ignores the order
        (
            "SELECT name FROM items ORDER BY name DESC",
            "SELECT name FROM items ORDER BY id",
            True,
        ),
        # the same columns in another order make other tuples: wrong
        ("SELECT price, name FROM items", "SELECT name, price FROM items", False),
        # repeated rows collapse in a set (BIRD compares set(fetchall()))
        ("SELECT category FROM items", "SELECT DISTINCT category FROM items", True),
        # a wrong column
        ("SELECT category FROM items WHERE id = 1", "SELECT name FROM items WHERE id = 1", False),
        # a subset of the rows
        ("SELECT name FROM items LIMIT 2", "SELECT name FROM items", False),
        # equal results from different SQL
        ("SELECT COUNT(id) FROM items", "SELECT COUNT(*) FROM items", True),
    ],
)
def test_result_sets_decide(db: Path, predicted: str, gold: str, correct: bool) -> None:
    verdict = ExecutionEvaluator(timeout=5).judge(db, predicted, gold)
    assert verdict.correct is correct
    assert verdict.error is None and verdict.gold_error is None


def test_invalid_sql_is_wrong_with_its_error(db: Path) -> None:
    evaluator = ExecutionEvaluator(timeout=5)
    verdict = evaluator.judge(db, "SELECT nme FROM items", "SELECT name FROM items")
    assert not verdict.correct and verdict.error == "no such column: nme"
    verdict = evaluator.judge(db, "SELEC name FROM items", "SELECT name FROM items")
    assert not verdict.correct and "syntax error" in (verdict.error or "")
    two = evaluator.judge(db, "SELECT 1; SELECT 2", "SELECT 1")  # one statement at a time
    assert not two.correct and two.error


def test_query_past_the_time_limit_is_stopped_and_wrong(db: Path) -> None:
    evaluator = ExecutionEvaluator(timeout=0.3)
    start = time.monotonic()
    verdict = evaluator.judge(db, SLOW_QUERY, "SELECT COUNT(*) FROM items")
    elapsed = time.monotonic() - start
    assert not verdict.correct and verdict.error == "timeout"
    assert elapsed < 3.0  # stopped near the limit, not after the billion rows
    # the evaluator still works afterwards
    assert evaluator.judge(db, "SELECT 1", "SELECT 1").correct


def test_connections_are_read_only(db: Path) -> None:
    evaluator = ExecutionEvaluator(timeout=5)
    verdict = evaluator.judge(db, "DELETE FROM items", "SELECT COUNT(*) FROM items")
    assert not verdict.correct and "readonly" in (verdict.error or "").replace("-", "")
    with pytest.raises(sqlite3.OperationalError):
        connect_read_only(db).execute("DROP TABLE items")
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM items").fetchone() == (len(ITEMS),)


def test_gold_that_fails_counts_wrong_and_is_reported(db: Path) -> None:
    verdict = ExecutionEvaluator(timeout=5).judge(db, "SELECT 1", "SELECT x FROM nowhere")
    assert not verdict.correct and verdict.error is None
    assert verdict.gold_error == "no such table: nowhere"
    missing = ExecutionEvaluator(timeout=5).judge(db.parent / "none.sqlite", "SELECT 1", "SELECT 1")
    assert not missing.correct and "no SQLite database" in (missing.error or "")


def test_accuracy_over_a_batch_with_workers_and_cached_gold(db: Path) -> None:
    items = [
        (db, "SELECT name FROM items ORDER BY price", "SELECT name FROM items"),
        (db, "SELECT id FROM items", "SELECT name FROM items"),
        (db, "SELECT name FROM items", "SELECT name FROM items"),
        (db, "nonsense", "SELECT name FROM items"),
    ]
    evaluator = ExecutionEvaluator(timeout=5, workers=2)
    verdicts = evaluator.judge_all(items)
    assert [v.correct for v in verdicts] == [True, False, True, False]
    assert execution_accuracy(verdicts) == 0.5
    assert execution_accuracy([]) == 0.0
    assert len(evaluator._gold) == 1  # one gold query, run once
    assert evaluator.queries == 4


@pytest.mark.parametrize(
    ("answer", "sql"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  SELECT name FROM items;  ", "SELECT name FROM items"),
        ("```sql\nSELECT name\nFROM items;\n```\nThis lists the names.", "SELECT name\nFROM items"),
        ("SELECT ';' AS x; SELECT 2", "SELECT ';' AS x"),  # a ';' in a literal is not the end
        ("```\nSELECT 1", "SELECT 1"),  # an unclosed fence (the answer ran out of tokens)
    ],
)
def test_extract_sql(answer: str, sql: str) -> None:
    assert extract_sql(answer) == sql


def test_string_scores() -> None:
    assert exact_match("SELECT  a\nFROM t", "SELECT a FROM t")
    assert not exact_match("select a from t", "SELECT a FROM t")  # case counts in exact match
    assert similarity("select a from t;", "SELECT a  FROM t") == 1.0  # normalised
    assert 0.0 < similarity("SELECT a FROM t", "SELECT b FROM u") < 1.0
    assert similarity("", "abc") == 0.0

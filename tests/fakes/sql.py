"""A small SQLite database and a text-to-SQL task folder over it (BIRD's layout)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

ITEMS = [
    (1, "apple", 1.5, "fruit"),
    (2, "banana", 0.5, "fruit"),
    (3, "carrot", 0.8, "vegetable"),
    (4, "bread", 2.5, "bakery"),
    (5, "cherry", 4.0, "fruit"),
    (6, "leek", 1.2, "vegetable"),
]
ORDERS = [(1, 1, 3), (2, 2, 5), (3, 4, 1), (4, 1, 2), (5, 5, 7)]

#: (question, SQL) pairs that run on the shop database.
PAIRS = [
    ("How many items are there?", "SELECT COUNT(*) FROM items"),
    ("List the names of all fruits.", "SELECT name FROM items WHERE category = 'fruit'"),
    ("What is the most expensive item?", "SELECT name FROM items ORDER BY price DESC LIMIT 1"),
    ("What is the price of bread?", "SELECT price FROM items WHERE name = 'bread'"),
    ("How many orders are there?", "SELECT COUNT(*) FROM orders"),
    ("List all vegetables.", "SELECT name FROM items WHERE category = 'vegetable'"),
    ("What is the cheapest item?", "SELECT name FROM items ORDER BY price ASC LIMIT 1"),
    ("What is the total quantity ordered?", "SELECT SUM(qty) FROM orders"),
]


def make_database(path: Path) -> Path:
    """`items(id, name, price, category)` and `orders(id, item_id, qty)` with a few rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, category TEXT);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item_id INTEGER REFERENCES items(id),"
        " qty INTEGER);"
    )
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", ITEMS)
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", ORDERS)
    conn.commit()
    conn.close()
    return path


def make_sql_folder(root: Path, n_sets: int = 1, n: int = 8) -> Path:
    """A task folder: synthetic/set<k>.jsonl of {question, SQL}, real/sample and real/test,
    and databases/shop/shop.sqlite (no db_id field: the folder's only database is used)."""
    (root / "synthetic").mkdir(parents=True)
    (root / "real").mkdir()
    make_database(root / "databases" / "shop" / "shop.sqlite")
    for s in range(n_sets):
        rows = [{"question": q, "SQL": sql} for q, sql in (PAIRS[s:] + PAIRS[:s])[:n]]
        (root / "synthetic" / f"set{s}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    real = [{"question": q} for q, _ in PAIRS]
    (root / "real" / "sample.jsonl").write_text("\n".join(json.dumps(r) for r in real))
    test = [{"question": q, "SQL": sql} for q, sql in PAIRS[:4]]
    (root / "real" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in test))
    return root


def make_app_store(db_root: Path) -> Path:
    """A stand-in for BIRD's `app_store` database (its two tables and their columns, a few
    made-up rows), so the paper's text2sql questions run: `<db_root>/app_store/app_store.sqlite`.
    """
    path = db_root / "app_store" / "app_store.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE playstore (App TEXT, Category TEXT, Rating REAL, Reviews INTEGER, "
        'Size TEXT, Installs TEXT, Type TEXT, Price TEXT, "Content Rating" TEXT, Genres TEXT, '
        '"Current Ver" TEXT);'
        "CREATE TABLE user_reviews (App TEXT REFERENCES playstore(App), Translated_Review TEXT, "
        "Sentiment TEXT, Sentiment_Polarity TEXT, Sentiment_Subjectivity TEXT);"
    )
    conn.executemany(
        "INSERT INTO playstore VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "Cooking Fever",
                "GAME",
                4.5,
                100,
                "90M",
                "100,000+",
                "Free",
                "0",
                "Everyone",
                "Arcade",
                "2.1",
            ),
            (
                "Akinator",
                "GAME",
                5.0,
                50,
                "20M",
                "10,000+",
                "Paid",
                "1.99",
                "Teen",
                "Puzzle",
                "7.0",
            ),
        ],
    )
    conn.executemany(
        "INSERT INTO user_reviews VALUES (?, ?, ?, ?, ?)",
        [
            ("Cooking Fever", "fun", "Positive", "0.5", "0.6"),
            ("Akinator", "meh", "Negative", "-1.0", "0.3"),
        ],
    )
    conn.commit()
    conn.close()
    return path

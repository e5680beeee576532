"""Task-folder builders: small user task folders in every supported file format."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def make_folder(root: Path, n_sets: int = 3, n: int = 12) -> Path:
    (root / "synthetic").mkdir(parents=True)
    (root / "real").mkdir()
    words = ["good", "bad", "great", "awful", "fine", "poor", "superb", "dull"]
    for s in range(n_sets):
        rows = [
            {"text": f"{words[(i + s) % 8]} movie number {i}", "label": i % 2} for i in range(n)
        ]
        if s == 0:
            (root / "synthetic" / f"set{s}.jsonl").write_text(
                "\n".join(json.dumps(r) for r in rows)
            )
        elif s == 1:
            pd.DataFrame(rows).to_csv(root / "synthetic" / f"set{s}.csv", index=False)
        else:
            pd.DataFrame(rows).to_parquet(root / "synthetic" / f"set{s}.parquet")
    real = [{"text": f"a {words[i % 8]} film, take {i}"} for i in range(n)]
    (root / "real" / "sample.jsonl").write_text("\n".join(json.dumps(r) for r in real))
    pd.DataFrame(
        {
            "dataset": [f"set{s}" for s in range(n_sets)],
            "task_performance": [0.5, 0.7, 0.6][:n_sets],
        }
    ).to_csv(root / "performance.csv", index=False)
    return root

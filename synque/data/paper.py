"""The paper's released layouts (sentiment, text2sql, web; images in `synque.data.imagenet`)."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

import polars as pl

from synque import SynqueError
from synque.data.io import read_csv
from synque.data.task import NO_GROUP, Task


class SentimentTask(Task):
    """Financial headlines (paper's sentiment task): one group."""

    native_metric = "f1_macro"

    def _candidate_files(self, group: str) -> dict[str, Path]:
        return {p.stem: p for p in (self.root / "synthetic_data").glob("*.json")}

    def _real_pool_file(self, group: str) -> Path:
        return self.root / "real_data" / "balanced_real.json"

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        return self.root / "real_data" / f"balanced_real_seed={seed}.json"

    def _test_file(self, group: str) -> Path | None:
        return self.root / "real_data" / "cleaned_ds_validation.json"

    def recorded_performance(self) -> pl.DataFrame:
        return self._performance_csv("sentiment_score.csv", "dataset_name", "test_f1_mean", None)


class Text2SQLTask(Task):
    """BIRD-style text-to-SQL: group = database.

    The SQLite databases are not released with the data; `db_root` names BIRD's databases
    folder (`<db_root>/<db_id>/<db_id>.sqlite`), which `train=lora` executes queries on.
    """

    native_metric = "exec_accuracy"

    def __init__(self, root: str | Path, db_root: str | Path | None = None, **options: object):
        super().__init__(root, **options)  # type: ignore[arg-type]
        self.db_root = Path(str(db_root)).expanduser().resolve() if db_root else None

    def _all_groups(self) -> list[str]:
        return sorted(
            p.name for p in (self.root / "data").iterdir() if p.is_dir() and p.name != "real"
        )

    def _candidate_files(self, group: str) -> dict[str, Path]:
        return {p.stem: p for p in (self.root / "data" / group).glob("*.json")}

    def _real_pool_file(self, group: str) -> Path:
        return self.root / "data" / "real" / f"dev_{group}.json"

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        return self.root / "data" / "real" / f"dev_{group}_seed={seed}.json"

    def _test_file(self, group: str) -> Path | None:
        return self._real_pool_file(group)

    def recorded_performance(self) -> pl.DataFrame:
        # execution accuracy is released in percent
        return self._performance_csv(
            "text2sql_score.csv", "dataset_name", "accuracy", "db_id", scale=0.01
        )


class WebTask(Task):
    """Web agent task intents: group = website, candidates = 5 partitions of NNetNav-Live."""

    native_metric = "success_rate"
    _pattern = re.compile(r"nnetnav_live_site=(?P<site>.+)_num_tasks=\d+_portion=(?P<part>\d+)")

    @cached_property
    def _files(self) -> dict[str, dict[str, Path]]:
        out: dict[str, dict[str, Path]] = {}
        for path in sorted((self.root / "original" / "synthetic").glob("*.json")):
            match = self._pattern.fullmatch(path.stem)
            if match:
                out.setdefault(match["site"], {})[path.stem] = path
        return out

    def _all_groups(self) -> list[str]:
        return sorted(self._files)

    def _candidate_files(self, group: str) -> dict[str, Path]:
        return self._files.get(group, {})

    def _real_pool_file(self, group: str) -> Path:
        return self.root / "original" / "real" / f"{group}.json"

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        return self.root / "sampled" / "real" / f"{group}_seed={seed}.json"

    def recorded_performance(self) -> pl.DataFrame:
        path = self.root / "task_performance" / "webvoyager_scores.csv"
        frame = read_csv(path, ["website", "success_rate", "partition"])
        rows = []
        for website, rate, partition in frame.select(
            "website", "success_rate", "partition"
        ).iter_rows():
            names = [n for n in self._files.get(website, {}) if n.endswith(f"_portion={partition}")]
            if not names:
                raise SynqueError(
                    f"{path}: no candidate set for website {website} partition {partition}"
                )
            rows.append((names[0], website, float(rate)))
        frame = pl.DataFrame(rows, schema=["dataset", "group", "task_performance"], orient="row")
        frame = frame.group_by(["dataset", "group"]).agg(pl.col("task_performance").mean())
        frame = frame.sort(["dataset", "group"])
        return frame.with_columns(pl.col("task_performance").alias(self.native_metric))


__all__ = ["NO_GROUP", "SentimentTask", "Text2SQLTask", "WebTask"]

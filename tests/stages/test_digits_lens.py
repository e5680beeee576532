"""`digits_lens` with a tiny RANDOM VLM, in-process (`llm=local`) and through a real
OpenAI-compatible server (`transformers serve`, `llm=openai`), then `digits_correlate` puts
LENS beside the image proxies. The LENS values mean nothing (random weights); the test proves
the paths run and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from synque.stages.correlate import run_correlate
from synque.stages.generate_images import run_generate_images
from synque.stages.lens import run_lens
from synque.stages.repr import run_repr
from synque.stages.train import run_train
from tests.fakes.vlm import serve_vlm
from tests.stages.test_images import runs

JUDGE = [
    "stage.max_synthetic=4",
    "stage.max_real=4",
    "rubric.n_images=2",
    "rubric.n_points=3",
    "rubric.max_tokens=40",
]


@pytest.mark.slow  # ~2 min: digits data, proxies, a small CNN, two judges
def test_digits_lens_local_and_openai_then_correlate(
    make_cfg, tmp_path: Path, tiny_vlm: Path
) -> None:
    task = [f"task.root={tmp_path / 'digits'}", "task.real_sample_size=60", "seed=1"]
    run_generate_images(
        make_cfg(
            "+experiment=digits_generate", *task, "generate.per_set=60", "generate.max_strategies=4"
        )
    )
    run_repr(make_cfg("+experiment=digits_repr", *task, "proxy=[mmd,fid,kid]"))
    run_train(
        make_cfg("+experiment=digits_train", *task, "train.max_epochs=1", "train.min_epochs=1")
    )

    local = make_cfg("+experiment=digits_lens", *task, *JUDGE, "llm.threads=1")
    local.llm.model = str(tiny_vlm)
    run_lens(local)
    with serve_vlm(tiny_vlm) as server:
        served = make_cfg(
            "+experiment=digits_lens",
            *task,
            *JUDGE,
            "llm=openai",
            f"llm.base_url={server.base_url}",
            "llm.name=tiny-vlm-served",
            "llm.max_retries=1",
            "llm.max_invalid_rate=1.0",  # a random model's free answers are mostly unreadable
            "llm.max_concurrency=2",
        )
        served.llm.model = server.model
        run_lens(served)

    uri = local.tracking.uri
    lens = [
        r
        for r in runs(uri, "synque-digits")
        if r.data.tags["synque.stage"] == "lens" and r.data.tags["synque.role"] == "child"
    ]
    assert len(lens) == 2 * 4 and all(r.info.status == "FINISHED" for r in lens)
    served_runs = [r for r in lens if r.data.tags["synque.llm"] == "tiny-vlm-served"]
    assert len(served_runs) == 4
    parent = next(
        r
        for r in runs(uri, "synque-digits")
        if r.data.tags["synque.stage"] == "lens"
        and r.data.tags["synque.role"] == "parent"
        and r.data.tags["synque.llm"] == "tiny-vlm-served"
    )
    # every judgment went over HTTP with the image inside the request
    assert parent.data.metrics["llm_calls"] >= 4 * (4 + 4) * 4 * 0.5
    assert parent.data.metrics["llm_request_bytes"] > parent.data.metrics["llm_calls"] * 100

    summary = run_correlate(
        make_cfg("+experiment=digits_correlate", *task, "stage.bootstrap=20", "stage.plots=false")
    )
    proxies = set(summary["proxy"].to_list())
    assert {"lens@tiny-vlm-served", f"lens@{tiny_vlm}", "fid", "kid", "mmd"} <= proxies

"""A newcomer's wrong commands, as a matrix: each ends in one line, the right exit code, no
traceback and no run left RUNNING (issue 14).

The matrix calls the entry point in-process (`runpy` runs `synque.run` as `__main__` with
`sys.argv` patched, the exit code read from `SystemExit`): the code path of
`python -m synque.run`, without 5-10 s of imports per case. `test_as_a_user_types_it` runs a
few cases as real subprocesses, so the `__main__` path and the shell's view are covered too.
Six cases run in the default set, the whole matrix in the slow set.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SYNQUE_DATA", ROOT.parent / "shared" / "synque-data")).resolve()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_task(root: Path, labels: bool = True) -> Path:
    """A tiny valid task folder: two candidate sets, a real sample, a labeled test set."""
    for i in range(2):
        rows = [{"text": f"set{i} example {j}", "label": j % 2} for j in range(8)]
        write_jsonl(root / "synthetic" / f"set{i}.jsonl", rows if labels else _drop(rows))
    write_jsonl(root / "real" / "sample.jsonl", [{"text": f"real {j}"} for j in range(6)])
    write_jsonl(
        root / "real" / "test.jsonl", [{"text": f"t {j}", "label": j % 2} for j in range(6)]
    )
    return root


def _drop(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "label"} for r in rows]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Case:
    """One wrong invocation: its arguments, environment, expected exit code and culprit."""

    args: list[str]
    code: int
    culprit: str
    env: dict[str, str] = field(default_factory=dict)
    runs: str = "none"  # "none": no run may exist; "failed": a run opened and ended FAILED


def case_for(name: str, tmp: Path) -> Case:
    """The invocation of case `name`, with its files under `tmp`."""
    good = make_task(tmp / "task")
    folder = ["+experiment=folder_repr", f"task.root={good}"]
    if name == "bare":
        return Case([], 2, "+experiment=NAME")
    if name == "no_task_root":
        return Case(["+experiment=folder_repr"], 2, "task.root")
    if name == "seed_not_int":
        return Case([*folder, "seed=abc"], 2, "seed=abc")
    if name == "component_value_type":  # the task's constructor says int
        return Case([*folder, "task.max_examples=abc"], 2, "task.max_examples=abc")
    if name == "force_not_bool":
        return Case([*folder, "force=maybe"], 2, "force=maybe")
    if name == "template_shell_stripped":  # what the shell leaves of task.text_template='{r}'
        return Case([*folder, "task.text_template={review}"], 2, "task.text_field=review")
    if name == "unknown_experiment":
        return Case(["+experiment=sentimnt_repr"], 2, "sentiment_repr")
    if name == "unknown_group_option":
        return Case([*folder, "embedder=minilmm"], 2, "embedder=minilmm")
    if name == "unknown_key":
        return Case([*folder, "task.txt_field=review"], 2, "task.txt_field")
    if name == "unknown_component_key":  # added with +, found by the component check
        return Case([*folder, "+embedder.batch_sise=3"], 2, "did you mean batch_size?")
    if name == "override_without_value":
        return Case(["+experiment"], 2, "+experiment")
    if name == "missing_synque_data":
        return Case(["+experiment=sentiment_repr"], 1, "SYNQUE_DATA", {"SYNQUE_DATA": str(tmp)})
    if name == "missing_task_folder":
        return Case(["+experiment=folder_repr", f"task.root={tmp / 'nope'}"], 1, "task.root")
    if name == "empty_task_folder":
        (tmp / "empty" / "synthetic").mkdir(parents=True)
        write_jsonl(tmp / "empty" / "real" / "sample.jsonl", [{"text": "x"}])
        return Case(["+experiment=folder_repr", f"task.root={tmp / 'empty'}"], 1, "synthetic/")
    if name == "malformed_candidate":
        (good / "synthetic" / "set1.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
        return Case(folder, 1, "set1.jsonl")
    if name == "missing_field":
        return Case([*folder, "task.text_field=review"], 1, "'review'")
    if name == "train_without_labels":
        bare = make_task(tmp / "unlabeled", labels=False)
        return Case(["+experiment=folder_train", f"task.root={bare}"], 1, "label")
    if name == "real_sample_too_small":
        return Case([*folder, "task.real_sample_size=50"], 1, "task.real_sample_size")
    if name == "unwritable_store":
        (tmp / "a_file").write_text("")
        uri = f"sqlite:///{tmp / 'a_file' / 'mlflow.db'}"
        return Case(folder, 1, "MLFLOW_TRACKING_URI", {"MLFLOW_TRACKING_URI": uri})
    if name == "tracking_server_down":
        env = {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
        }
        return Case(["+experiment=folder_select", f"task.root={good}"], 1, "127.0.0.1", env)
    if name == "llm_server_down":
        url = f"http://127.0.0.1:{closed_port()}/v1"
        args = ["+experiment=folder_lens", f"task.root={good}", "llm=openai"]
        args += [f"llm.base_url={url}", "llm.max_retries=0"]
        return Case(args, 1, "llm.base_url", runs="failed")
    raise KeyError(name)


#: Every case, the issue's list and more; FAST_CASES run in the default set, the rest are slow
#: (a second each in-process, ~20 s for the two that import a trainer or an LLM client).
CASES = [
    "bare",
    "no_task_root",
    "seed_not_int",
    "force_not_bool",
    "component_value_type",
    "template_shell_stripped",
    "unknown_experiment",
    "unknown_group_option",
    "unknown_key",
    "unknown_component_key",
    "override_without_value",
    "missing_synque_data",
    "missing_task_folder",
    "empty_task_folder",
    "malformed_candidate",
    "missing_field",
    "train_without_labels",
    "real_sample_too_small",
    "unwritable_store",
    "tracking_server_down",
    "llm_server_down",
]
FAST_CASES = {
    "bare",
    "seed_not_int",
    "template_shell_stripped",
    "unknown_experiment",
    "unknown_key",
    "empty_task_folder",
}
MATRIX = [
    pytest.param(name, marks=[] if name in FAST_CASES else [pytest.mark.slow]) for name in CASES
]


def store_runs(uri: str) -> list[str]:
    """Statuses of every run in a sqlite store (none when it was never created)."""
    path = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or not path.is_file():
        return []
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return [r.info.status for r in client.search_runs(ids)] if ids else []


def check_outcome(case: Case, code: int, stderr: str, uri: str) -> None:
    """The matrix's assertions: exit code, one `synque: error:` line naming the culprit."""
    errors = [line for line in stderr.splitlines() if line.startswith("synque: error:")]
    assert code == case.code, stderr[-2000:]
    assert len(errors) == 1, stderr[-2000:]
    assert case.culprit in errors[0], errors[0]
    assert "Traceback" not in stderr
    assert "Error executing job" not in stderr  # Hydra's own extra line
    statuses = store_runs(uri)
    assert "RUNNING" not in statuses
    if case.runs == "failed":  # the store check above is not vacuous
        assert "FAILED" in statuses
    else:
        assert statuses == []


@pytest.fixture
def invoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[Case], tuple[int, str]]:
    """Run `python -m synque.run <args>` in-process; (exit code, stderr)."""

    def _invoke(case: Case) -> tuple[int, str]:
        env = {"SYNQUE_DATA": str(DATA), "SYNQUE_CACHE": str(tmp_path / "cache"), **case.env}
        env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # restored after the test (cli sets it)
        extra = [f"paths.output_dir={tmp_path / 'out'}", "progress=false"] if case.args else []
        monkeypatch.setattr(sys, "argv", ["synque.run", *case.args, *extra])
        GlobalHydra.instance().clear()
        code = 0
        try:  # as `python -m`: Hydra finds configs/ beside the file
            runpy.run_module("synque.run", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            GlobalHydra.instance().clear()
        return code, capsys.readouterr().err

    return _invoke


@pytest.mark.parametrize("name", MATRIX)
def test_wrong_invocation(name: str, tmp_path: Path, invoke) -> None:
    case = case_for(name, tmp_path)
    code, stderr = invoke(case)
    check_outcome(case, code, stderr, os.environ["MLFLOW_TRACKING_URI"])


def test_malformed_file_stops_before_any_model(tmp_path: Path, invoke, monkeypatch) -> None:
    """The design's "validate before heavy work": no embedder is built, no run opened."""
    import synque.stages.repr as repr_stage

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedder was built before the inputs were checked")

    monkeypatch.setattr(repr_stage, "open_embedder", no_model)
    monkeypatch.setattr(repr_stage, "run_repr", no_model)
    case = case_for("malformed_candidate", tmp_path)
    code, stderr = invoke(case)
    check_outcome(case, code, stderr, os.environ["MLFLOW_TRACKING_URI"])
    assert "malformed JSON at line 2" in stderr


def test_text_field_and_dry_run(tmp_path: Path, invoke) -> None:
    """`task.text_field=review` reads that field; a dry run checks and stops with code 0."""
    root = tmp_path / "reviews"
    for name in ("a", "b"):
        write_jsonl(
            root / "synthetic" / f"{name}.jsonl", [{"review": f"{name} {j}"} for j in "xyz"]
        )
    write_jsonl(root / "real" / "sample.jsonl", [{"review": "real"}])
    args = ["+experiment=folder_repr", f"task.root={root}", "task.text_field=review"]
    code, stderr = invoke(Case(args, 0, "", env={"SYNQUE_DRY_RUN": "1"}))
    assert code == 0 and "synque: error" not in stderr, stderr
    assert store_runs(os.environ["MLFLOW_TRACKING_URI"]) == []


def test_verbose_shows_the_traceback(tmp_path: Path, invoke) -> None:
    """`verbose=true` is for bug reports: the original exception propagates."""
    case = Case(
        ["+experiment=folder_repr", f"task.root={tmp_path}", "seed=abc", "verbose=true"], 2, ""
    )
    with pytest.raises(Exception, match="seed=abc: not an integer"):
        invoke(case)


USER_CASES = ["bare", pytest.param("template_shell_stripped", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", USER_CASES)
def test_as_a_user_types_it(name: str, tmp_path: Path) -> None:
    """A few cases through `python -m synque.run` in a subprocess (imports and all)."""
    case = case_for(name, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "SYNQUE_DATA": str(DATA), "MLFLOW_TRACKING_URI": uri, **case.env}
    env.pop("HYDRA_FULL_ERROR", None)
    extra = [f"paths.output_dir={tmp_path / 'out'}"] if case.args else []
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "synque.run", *case.args, *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    check_outcome(case, proc.returncode, proc.stderr, uri)
    if name == "bare":  # the usage: the README's two commands, the experiments, the docs
        assert "+experiment=quickstart" in proc.stderr and "+experiment=digits" in proc.stderr
        assert "sentiment_repr" in proc.stderr and "docs/" in proc.stderr
    print(f"{name}: {time.perf_counter() - start:.1f}s")


def test_text_field_left_unset_keeps_the_config_hash(make_cfg) -> None:
    """Adding `task.text_field` must not re-run jobs finished before it existed."""
    from omegaconf import open_dict

    from synque.config import config_hash

    cfg = make_cfg("+experiment=folder_repr", "task.root=/tmp/somewhere")
    before = cfg.copy()
    with open_dict(before):
        del before.task["text_field"]
    assert config_hash(cfg) == config_hash(before)
    named = make_cfg("+experiment=folder_repr", "task.root=/tmp/somewhere", "task.text_field=r")
    assert config_hash(named) != config_hash(cfg)

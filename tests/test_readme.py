"""Every command of README.md, run as printed (issue 14).

The harness extracts the README's code: indented blocks (shell) and fenced ```python blocks,
a command continued with `\\` being one line. Each line gets a verdict (`verdict`):

- `dry`: a `python -m synque.run` command, run with `SYNQUE_DRY_RUN=1`: the shell parses the
  line exactly as printed (bash, with a function standing in for `python` that hands back
  the argv bash built), then the entry point composes it, checks its values, components,
  tracking store and every input file of every job, and stops before the stage. Why not run
  them all: the quickstart and the paper's sweeps take minutes to hours; their runs are the
  slow end-to-end tests' job, while a README line that no longer parses (the issue's
  `task.text_template='{review}'`), names a removed experiment or key, or points at a
  missing file is caught here in seconds. The dry runs call the entry point in-process
  (`runpy`, as `python -m` does) with the repository root moved to a temporary folder, so
  Hydra's output folders stay out of the checkout.
- `run`: also run for real, exactly as printed, in `bash` (slow set): the cheap ones.
- `skip` (with the reason) and `env` (a placeholder the harness supplies: `SYNQUE_DATA`,
  `ROOT`): lines that need a GPU, a server, ImageNet, a download, or minutes of work.

A README line no rule knows fails the test, so a new command cannot go unchecked.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

import synque.config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DATA = Path(os.environ.get("SYNQUE_DATA", ROOT.parent / "shared" / "synque-data")).resolve()


@dataclass(frozen=True)
class Line:
    """One command of the README: its section heading, its text, and its language."""

    section: str
    text: str
    language: str  # "shell" or "python"

    def __str__(self) -> str:
        return f"[{self.section}] {' '.join(self.text.split())[:90]}"


def readme_lines(text: str) -> list[Line]:
    """Indented shell blocks and fenced python blocks, with the heading each sits under."""
    lines: list[Line] = []
    section, fence, block, pending = "", None, [], ""
    in_block, previous_blank = False, True
    for raw in text.splitlines():
        if fence is not None:  # inside a fenced block: collect until the closing fence
            if raw.startswith("```"):
                lines.append(Line(section, "\n".join(block), fence))
                fence, block = None, []
            else:
                block.append(raw)
            continue
        if raw.startswith("```"):
            fence = raw[3:].strip() or "shell"
            continue
        if raw.startswith("#"):
            section = raw.lstrip("#").strip()
        if raw.startswith("    ") and (in_block or previous_blank):
            in_block = True
            joined = f"{pending}\n{raw[4:]}" if pending else raw[4:]
            pending = joined if joined.rstrip().endswith("\\") else ""
            if not pending and joined.strip() and not joined.strip().startswith("#"):
                lines.append(Line(section, joined, "shell"))
        elif raw.strip():
            in_block = False
        previous_blank = not raw.strip()
    return lines


#: (pattern, verdict, reason), first match wins; `dry` lines in RUN are also run for real.
RULES: list[tuple[str, str, str]] = [
    (r"^ROOT/", "layout", "a folder layout, not a command"),
    (r"python3 -m venv|setup\.sh", "skip", "creates a venv and installs packages (network)"),
    (r"^export (SYNQUE_DATA|ROOT)=", "env", "a placeholder: the harness sets it to real data"),
    (r"MLFLOW_TRACKING_(USERNAME|PASSWORD|URI)|launch/", "skip", "a tracking server or SLURM"),
    (r"hydra/launcher=", "skip", "logs to the tracking server set up just before"),
    (r"vllm serve|llm=openai", "skip", "needs a GPU and an LLM server"),
    (r"synthetic_root=|imagenet_root=", "skip", "needs ImageNet and the paper's SD images"),
    (r"task\.db_root=", "skip", "needs BIRD's SQLite databases (not released)"),
    (r"\+experiment=digits_", "skip", "reads what +experiment=digits made (slow digits tests)"),
    (r"^mlflow ui", "skip", "starts the UI server (tests/ui drives it)"),
    (r"python -m pytest", "skip", "the test suite itself"),
    (r"python bench/", "skip", "a benchmark (minutes; docs/benchmarks.md)"),
    (r"load_study\(", "skip", "reads the digits study (tests/test_notebooks.py runs this API)"),
    (r"MlflowClient\(", "run", "reads back the store sentiment_recorded wrote"),
    (r"python -m synque\.run ", "dry", "composed and checked as printed"),
]
#: The commands also run for real in the slow test, in this order (the snippet that reads the
#: store back needs what they log).
RUN = ("+experiment=sentiment_recorded ",)


def verdict(line: Line) -> tuple[str, str]:
    for pattern, kind, reason in RULES:
        if re.search(pattern, line.text, re.MULTILINE):
            return kind, reason
    raise AssertionError(f"no rule for README line {line}: add one to RULES")


LINES = readme_lines(README.read_text())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def text_task(root: Path) -> Path:
    """A task folder with every field the README's examples name (text, review, stars...)."""
    for i in range(3):
        rows = [
            {"text": f"t{i} {j}", "label": j % 2, "review": f"r{j}", "title": "x", "stars": j % 3}
            for j in range(6)
        ]
        write_jsonl(root / "synthetic" / f"set{i}.jsonl", rows)
    real = [{"text": f"s {j}", "review": "r", "title": "y"} for j in range(5)]
    write_jsonl(root / "real" / "sample.jsonl", real)
    test = [{"text": f"t {j}", "label": j % 2, "review": "r", "stars": j % 3} for j in range(4)]
    write_jsonl(root / "real" / "test.jsonl", test)
    performance = "dataset,task_performance\nset0,0.5\nset1,0.7\nset2,0.6\n"
    (root / "performance.csv").write_text(performance)
    return root


def image_task(root: Path) -> Path:
    """A task folder of images: two sets with class sub-folders, a real sample."""
    from PIL import Image

    for name in ("a", "b"):
        for label in ("0", "1"):
            folder = root / "synthetic" / name / label
            folder.mkdir(parents=True)
            for j in range(2):
                Image.new("RGB", (8, 8), (40 * j, 100, 7 * len(name))).save(folder / f"{j}.png")
    (root / "real" / "sample").mkdir(parents=True)
    for j in range(3):
        Image.new("RGB", (8, 8), (j, j, j)).save(root / "real" / "sample" / f"{j}.png")
    return root


def environment(tmp: Path, line: Line) -> dict[str, str]:
    """What the README tells the reader to set first: SYNQUE_DATA, and ROOT per section."""
    root = tmp / "root"
    if not root.exists():
        (image_task if "images" in line.section.lower() else text_task)(root)
    return {
        "SYNQUE_DATA": str(DATA),
        "SYNQUE_CACHE": str(tmp / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        "SYNQUE_OUTPUTS": str(tmp / "outputs"),  # Hydra's job folders, out of the checkout
        "ROOT": str(root),
    }


def shell_argv(line: Line, env: dict[str, str]) -> list[str]:
    """The argv bash gives `python` for this line, exactly as printed (quotes, $ROOT)."""
    script = 'python() { printf "%s\\0" "$@"; }\n' + line.text
    out = subprocess.run(
        ["bash", "-c", script], env={**os.environ, **env}, capture_output=True, check=True
    ).stdout
    return out.decode().split("\0")[:-1]


def test_every_line_has_a_verdict() -> None:
    """The extraction finds the README's commands, and every line is accounted for."""
    kinds = [verdict(line)[0] for line in LINES]
    assert kinds.count("dry") >= 15, [str(line) for line in LINES]
    assert kinds.count("run") >= 1 and kinds.count("skip") >= 5
    texts = " ".join(line.text for line in LINES)
    assert "+experiment=quickstart" in texts and "task.text_field=review" in texts
    assert all(any(r in line.text for line in LINES) for r in RUN)


#: Dry runs in the default set (a second or two each); the others are in the slow set.
FAST = ("+experiment=quickstart", "task.text_field=review", "task.text_template=", "DRY_RUN=1")
DRY = [
    pytest.param(line, marks=[] if any(f in line.text for f in FAST) else [pytest.mark.slow])
    for line in LINES
    if verdict(line)[0] == "dry"
]


@pytest.mark.parametrize("line", DRY, ids=[f"L{i}" for i in range(len(DRY))])
def test_readme_command_dry_run(
    line: Line,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not (DATA / "sentiment_analysis").is_dir():
        pytest.skip("SYNQUE_DATA (released data) not found")
    env = environment(tmp_path, line)
    argv = shell_argv(line, env)
    assert argv[:2] == ["-m", "synque.run"], argv
    for key, value in {**env, "SYNQUE_DRY_RUN": "1", "HYDRA_FULL_ERROR": "0"}.items():
        monkeypatch.setenv(key, value)
    # Hydra's output folders under a temporary root instead of the checkout
    monkeypatch.setattr(synque.config, "project_root", lambda: tmp_path)
    monkeypatch.setattr(sys, "argv", ["synque.run", *argv[2:]])
    GlobalHydra.instance().clear()
    code = 0
    try:
        runpy.run_module("synque.run", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr()
    assert code == 0, f"{line}\n{out.err[-2000:]}"
    assert "synque: error" not in out.err
    jobs = out.out.count("synque: dry run:")
    sweep = re.search(r"\s-m (\w[\w.]*=\S+)", line.text)
    expected = 1 if sweep is None else len(sweep.group(1).split("=", 1)[1].split(","))
    assert jobs == expected, out.out[-2000:]


@pytest.mark.slow
def test_readme_commands_for_real(tmp_path: Path) -> None:
    """The cheap commands, exactly as printed in bash, then the README's reading snippet."""
    if not (DATA / "sentiment_analysis").is_dir():
        pytest.skip("SYNQUE_DATA (released data) not found")
    lines = [next(x for x in LINES if r in x.text) for r in RUN]
    lines.append(next(x for x in LINES if verdict(x)[0] == "run"))
    for line in lines:
        env = {**os.environ, **environment(tmp_path, line)}
        # the snippet's relative sqlite:///mlruns/mlflow.db is the store of its working folder
        env["MLFLOW_TRACKING_URI"] = "sqlite:///mlruns/mlflow.db"
        env.pop("HYDRA_FULL_ERROR", None)
        cmd = ["bash", "-c", line.text] if line.language == "shell" else [sys.executable, "-c"]
        if line.language == "python":
            cmd.append(line.text + "\nassert exp is not None and isinstance(runs, list)")
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        print(f"{time.perf_counter() - start:6.1f}s {line}")

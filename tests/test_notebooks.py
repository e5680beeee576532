"""Every notebook runs top to bottom (with its own assertions) on a small temporary store.

The notebooks read `MLFLOW_TRACKING_URI`, `SYNQUE_DATA`, `SYNQUE_SMALL` and `SYNQUE_WORKDIR`
from the environment, which the kernel inherits; they are stored without outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, tmp_path: Path) -> str:
    """Run `notebooks/<name>.ipynb` in a fresh kernel; all it printed, as one string."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "stored with outputs"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell: the parameters"
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # a failing cell (an assertion included) raises CellExecutionError
    outputs = [o for c in code for o in c.outputs]
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # rich colours the stage's tables


@pytest.fixture
def notebook_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tracking_uri: str, shared_cache: Path
) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SYNQUE_CACHE", str(shared_cache))
    monkeypatch.setenv("SYNQUE_SMALL", "1")
    monkeypatch.setenv("SYNQUE_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def test_paper_correlations(
    notebook_env: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNQUE_DATA", str(data_root))
    printed = execute("paper_correlations", notebook_env)
    assert "running the stages" in printed  # the store was empty
    assert "LENS Spearman: API" in printed


def test_own_task(notebook_env: Path) -> None:
    printed = execute("own_task", notebook_env)
    assert "Recommendation: a" in printed and "chosen set: a" in printed


def test_compare_embedders(notebook_env: Path) -> None:
    printed = execute("compare_embedders", notebook_env)
    assert "spearman_diff" in printed

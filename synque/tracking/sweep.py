"""Sweep identity and Hydra job files for MLflow runs: a Hydra callback and what it hands over.

Why a callback: only Hydra knows which jobs belong to one `-m` command, and the launcher may
run them in other processes (joblib's loky workers) or on other machines (submitit). The
callback's `on_multirun_start` runs once, in the process that parses the command line; it
draws the sweep id and writes the sweep's own overrides. Its `on_job_start` runs inside
each job, in whatever process the launcher picked, and publishes a `HydraJob` that
`StageRun` reads: the tag `synque.sweep_id` goes into the tags every run already starts
with (no extra MLflow call per child), the job's Hydra files are logged once when the
parent run opens and the job's log file once when it closes.

The id reaches the jobs three ways, so that any launcher sees the same one: the callback
object itself (Hydra pickles it, with the state `on_multirun_start` gave it, into every
joblib/submitit job), the file `<sweep dir>/.synque_sweep.yaml` (on a shared file system
for cluster launchers), and the environment variable `SYNQUE_SWEEP_ID` (inherited by local
worker processes). Single runs (no `-m`) get no sweep id: the tag means "one of a sweep".

Kept free of MLflow imports at module level: the callback is built in the launching
process of every command, which never logs anything itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # MLflow is imported by the process that logs, not by the launcher
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

#: Environment variable carrying the sweep id to worker processes (set by the launching one).
SWEEP_ENV = "SYNQUE_SWEEP_ID"
#: File in the sweep folder with the sweep id and the command's overrides.
SWEEP_FILE = ".synque_sweep.yaml"
#: Artifact folder of a parent run that holds the Hydra files and the log.
ARTIFACT_DIR = "hydra"


def new_sweep_id() -> str:
    """A readable, time-sortable, unique id: `20250101-120000-3fa2b1`."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class HydraJob:
    """The Hydra job a stage runs in: what its parent run tags and logs."""

    output_dir: Path
    overrides: tuple[str, ...]
    sweep: dict[str, Any] | None = None
    hydra_yaml: str = ""
    log_files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def sweep_id(self) -> str | None:
        return str(self.sweep["sweep_id"]) if self.sweep else None

    def tags(self) -> dict[str, str]:
        """Tags of every run of this job (parent and children)."""
        return {"synque.sweep_id": self.sweep_id} if self.sweep_id else {}

    def log_files_at_start(self, client: MlflowClient, run_id: str) -> None:
        """hydra.yaml, the job's overrides and (in a sweep) the sweep's: one MLflow call."""
        with tempfile.TemporaryDirectory(prefix="synque-hydra-") as tmp:
            folder = Path(tmp)
            (folder / "hydra.yaml").write_text(self.hydra_yaml)
            _write_yaml(folder / "overrides.yaml", list(self.overrides))
            if self.sweep:
                _write_yaml(folder / "sweep.yaml", self.sweep)
            client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)

    def log_files_at_end(self, client: MlflowClient, run_id: str) -> None:
        """The job's log file(s) as they are now (the run's end, failed or not).

        Why not raise: the stage's work is done and recorded; a log that cannot be uploaded
        must not turn a finished run into a failed one.
        """
        for path in self.log_files:
            if not path.is_file():
                continue
            try:
                client.log_artifact(run_id, str(path), ARTIFACT_DIR)
            except Exception as exc:  # store or server trouble
                log.warning("could not log %s with run %s: %s", path, run_id, exc)


_current: HydraJob | None = None


def current_job() -> HydraJob | None:
    """The Hydra job this process runs now, or None (no Hydra app, or the callback is off).

    Why the check: a job that exits through `sys.exit` skips `on_job_end`, so a later
    non-Hydra use in the same process (tests) must not inherit the old job.
    """
    if _current is None or not HydraConfig.initialized():
        return None
    output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
    if output_dir is None or Path(str(output_dir)).resolve() != _current.output_dir:
        return None
    return _current


def _write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def _overrides(node: Any) -> list[str]:
    return [str(o) for o in (node or [])]


def _hydra_yaml(config: DictConfig) -> str:
    """Hydra's own `.hydra/hydra.yaml` of the job, or the same thing dumped (no output_subdir)."""
    subdir = config.hydra.output_subdir
    if subdir is not None:
        path = Path(str(config.hydra.runtime.output_dir)) / str(subdir) / "hydra.yaml"
        if path.is_file():
            return path.read_text()
    return OmegaConf.to_yaml(OmegaConf.create({"hydra": config.hydra}))


def _log_files(config: DictConfig) -> tuple[Path, ...]:
    """The files the job's logging writes: the root logger's file handlers (Hydra's
    `<job dir>/<job name>.log` by default, whatever `hydra/job_logging` says)."""
    files = [
        Path(h.baseFilename)
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler)
    ]
    if not files:
        default = Path(str(config.hydra.runtime.output_dir)) / f"{config.hydra.job.name}.log"
        files = [default] if default.is_file() else []
    return tuple(dict.fromkeys(p.resolve() for p in files))


def _sweep_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)).absolute()


def _read_sweep_file(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load((sweep_dir / SWEEP_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) and data.get("sweep_id") else None


class SweepCallback(Callback):
    """Registered in `configs/hydra/default.yaml` under `hydra.callbacks`."""

    def __init__(self) -> None:
        self.sweep: dict[str, Any] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the launching process, before any job: draw the id, write it down."""
        sweep_dir = _sweep_dir(config)
        self.sweep = {
            "sweep_id": new_sweep_id(),
            "sweep_dir": str(sweep_dir),
            "launcher": str(OmegaConf.select(config, "hydra.launcher._target_", default="")),
            "overrides": _overrides(config.hydra.overrides.task),
        }
        os.environ[SWEEP_ENV] = self.sweep["sweep_id"]
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            _write_yaml(sweep_dir / SWEEP_FILE, self.sweep)
        except OSError as exc:  # the id still travels with the callback and the environment
            log.warning("sweep: cannot write %s: %s", sweep_dir / SWEEP_FILE, exc)
        log.info("sweep id %s", self.sweep["sweep_id"])

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Inside the job's process: publish the job for `StageRun`."""
        global _current
        sweep = None
        if config.hydra.mode == RunMode.MULTIRUN:
            sweep = dict(self._sweep_of(config))
            sweep["job"] = {
                "num": int(config.hydra.job.num),
                "id": str(config.hydra.job.id),
                "overrides": _overrides(config.hydra.overrides.task),
            }
        _current = HydraJob(
            output_dir=Path(str(config.hydra.runtime.output_dir)).resolve(),
            overrides=tuple(_overrides(config.hydra.overrides.task)),
            sweep=sweep,
            hydra_yaml=_hydra_yaml(config),
            log_files=_log_files(config),
        )

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        global _current
        _current = None

    def _sweep_of(self, config: DictConfig) -> dict[str, Any]:
        """The sweep as `on_multirun_start` wrote it, from whichever channel reached here."""
        if self.sweep:  # pickled along with the launcher (basic, joblib, submitit)
            return self.sweep
        sweep_dir = _sweep_dir(config)
        found = _read_sweep_file(sweep_dir)
        if found:  # a launcher that builds its own callbacks, on a shared file system
            return found
        ident = os.environ.get(SWEEP_ENV) or (
            # last resort: every job of one sweep shares its folder
            "dir-" + hashlib.sha256(str(sweep_dir).encode()).hexdigest()[:12]
        )
        return {"sweep_id": ident, "sweep_dir": str(sweep_dir), "overrides": None}

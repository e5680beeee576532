"""MLflow tracking per DESIGN's schema: one parent run per Hydra job, a child per candidate set.

Why a class: every stage needs the same lifecycle (skip a finished config hash, mark stale
RUNNING runs FAILED, log params/config/datasets, never leave a run RUNNING), and writing it
once keeps the schema identical across stages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from synque.config import config_hash, flat_params, to_container
from synque.data.task import NO_GROUP
from synque.tracking.notes import mark_model_development
from synque.tracking.store import TAG, connect, ensure_experiment, experiment_name
from synque.tracking.sweep import current_job

log = logging.getLogger(__name__)

#: Seconds between two looks at a twin job (same config hash, another live process).
TWIN_POLL_S = 2.0
#: `synque.seed` of a run that reads every seed's runs (correlate, select).
ALL_SEEDS = "all"


def _alive(pid: int) -> bool:
    """Whether process `pid` (on this host) still runs.

    A zombie counts as dead: a worker killed with its launcher stays a zombie until some
    process reaps it (never, under a container init that does not), and `kill(pid, 0)`
    succeeds on a zombie, which would keep its runs RUNNING for good.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it exited meanwhile; or no procfs (macOS): then trust kill()
        return not Path("/proc/self").exists()
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """A `kill` (SIGTERM) unwinds like Ctrl-C, so the run is closed as FAILED, not RUNNING."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a launcher's worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def without_seed(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus the top-level `seed` (what an aggregating run depends on)."""
    data = to_container(cfg)
    data.pop("seed", None)
    return data


@dataclass
class StageRun:
    """Lifecycle of one stage job: `with StageRun(cfg, ...) as job: with job.child(...)`.

    `aggregate=True` is for stages that read the runs of every seed (correlate, select): the
    top-level `seed` is not theirs, so their run has `synque.seed=all`, no seed in its name,
    and neither its config hash nor its params hold `seed` (a sweep over seeds does the
    work once). The seeds a run did aggregate are the stage's to tag (`synque.seeds`).
    """

    cfg: DictConfig
    stage: str
    task: str
    tags: dict[str, str] = field(default_factory=dict)
    dataset: str = "all"
    group: str = NO_GROUP
    aggregate: bool = False

    def __post_init__(self) -> None:
        self.client = connect(self.cfg)
        self.experiment_id = ensure_experiment(self.client, experiment_name(self.task))
        mark_model_development(self.client, self.experiment_id)
        self._view: DictConfig | dict[str, Any] = (
            without_seed(self.cfg) if self.aggregate else self.cfg
        )
        self.hash = config_hash(self._view)
        self.force = bool(OmegaConf.select(self.cfg, "force", default=False))
        seed = ALL_SEEDS if self.aggregate else OmegaConf.select(self.cfg, "seed", default=None)
        # the Hydra job (sweep id, its files, its log), published by SweepCallback
        self.hydra_job = current_job()
        self.base_tags = {
            f"{TAG}stage": self.stage,
            f"{TAG}task": self.task,
            f"{TAG}seed": "none" if seed is None else str(seed),
            **{k if k.startswith(TAG) else TAG + k: str(v) for k, v in self.tags.items()},
            **(self.hydra_job.tags() if self.hydra_job else {}),
        }
        self.run: Run | None = None
        self.children_logged = 0
        self.children_skipped = 0
        self._skippable = False  # set by finished_run(): the stage skips finished configs
        self._duplicate_of: str | None = None

    # --- queries -----------------------------------------------------------------------
    def _search(self, filter_string: str, max_results: int = 5000) -> list[Run]:
        return self.client.search_runs(
            [self.experiment_id], filter_string=filter_string, max_results=max_results
        )

    def finished_run(self) -> Run | None:
        """A FINISHED parent run with this config hash, if any (then the job is skipped).

        While another live process runs this very config (a twin job), wait for it first:
        jobs of one sweep share a hash when the sweep varies a key the stage does not use
        (e.g. `llm` for `repr`), and a parallel launcher would otherwise do the work twice.
        """
        if self.force:
            return None
        self._skippable = True
        while True:
            if (done := self._finished_parent()) is not None:
                return done
            twins = self._live_twins()
            if not twins:
                return None
            self._wait_for(twins)

    def _finished_parent(self) -> Run | None:
        runs = self._search(
            f"tags.`{TAG}config_hash` = '{self.hash}' and tags.`{TAG}role` = 'parent' "
            "and attributes.status = 'FINISHED'",
            max_results=1,
        )
        return runs[0] if runs else None

    def _live_twins(self, older_than: Run | None = None) -> list[Run]:
        """RUNNING parents of this config hash held by other live processes on this host
        (only those started before `older_than`, when given).

        Runs of other hosts are not twins: their liveness is unknown here, and
        `_close_stale_runs` treats them as stale, as it always has.
        """
        host = socket.gethostname()
        twins = []
        for run in self._search(
            f"tags.`{TAG}config_hash` = '{self.hash}' and tags.`{TAG}role` = 'parent' "
            "and attributes.status = 'RUNNING'"
        ):
            tags = run.data.tags
            pid = int(tags.get(f"{TAG}pid", "0") or 0)
            if tags.get(f"{TAG}host") != host or pid in (0, os.getpid()) or not _alive(pid):
                continue
            if older_than is not None and (run.info.start_time, run.info.run_id) >= (
                older_than.info.start_time,
                older_than.info.run_id,
            ):
                continue
            twins.append(run)
        return twins

    def _wait_for(self, twins: list[Run]) -> None:
        """Block until the twins' runs end or their processes die.

        No time limit: a twin may rightly take hours. The log names the run and process
        waited for (every 10 minutes), so a hung one can be killed, or skipped with force.
        """
        last_note = 0.0
        while twins:
            if time.monotonic() - last_note > 600:
                last_note = time.monotonic()
                for twin in twins:
                    log.info(
                        "%s %s: run %s (pid %s) is doing this config; waiting for it",
                        self.stage,
                        self.task,
                        twin.info.run_id,
                        twin.data.tags.get(f"{TAG}pid"),
                    )
            time.sleep(TWIN_POLL_S)
            fresh = (self.client.get_run(t.info.run_id) for t in twins)
            twins = [
                t
                for t in fresh
                if t.info.status == "RUNNING" and _alive(int(t.data.tags[f"{TAG}pid"]))
            ]

    def finished_children(self) -> dict[tuple[str, str], Run]:
        """Children of earlier attempts of this job that finished: resumable work."""
        if self.force:
            return {}
        runs = self._search(
            f"tags.`{TAG}job_hash` = '{self.hash}' and tags.`{TAG}role` = 'child' "
            f"and tags.`{TAG}stage` = '{self.stage}' and attributes.status = 'FINISHED'"
        )
        return {(r.data.tags[f"{TAG}group"], r.data.tags[f"{TAG}dataset"]): r for r in runs}

    def _close_stale_runs(self) -> None:
        """Runs of this config left RUNNING by a killed process are marked FAILED."""
        host = socket.gethostname()
        for run in self._search(
            f"tags.`{TAG}job_hash` = '{self.hash}' and attributes.status = 'RUNNING'"
        ):
            tags = run.data.tags
            pid = int(tags.get(f"{TAG}pid", "0") or 0)
            if tags.get(f"{TAG}host") == host and pid and _alive(pid) and pid != os.getpid():
                continue
            self.client.set_tag(run.info.run_id, f"{TAG}error", "process died while running")
            self.client.set_terminated(run.info.run_id, status="FAILED")

    def pending(
        self, pairs: Iterable[tuple[str, str]], desc: str, unit: str = "set"
    ) -> Iterator[tuple[str, str]]:
        """The (group, candidate) pairs still to do, behind a progress bar.

        Why one loop: every stage resumes the same way (children of an earlier attempt that
        FINISHED are skipped and counted), so a stage body only handles one candidate set.
        """
        done = self.finished_children()
        progress = bool(OmegaConf.select(self.cfg, "progress", default=True))
        for group, name in tqdm(list(pairs), desc=desc, unit=unit, disable=not progress):
            if (group, name) in done:
                self.children_skipped += 1
                continue
            yield group, name

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> StageRun:
        self._close_stale_runs()
        self._signals = _sigterm_as_exception()
        self._signals.__enter__()
        seed = self.base_tags[f"{TAG}seed"]
        name = f"{self.stage}-{self.task}" + (
            f"-seed{seed}" if seed not in ("none", ALL_SEEDS) else ""
        )
        self.run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=name,
            tags={
                **self.base_tags,
                f"{TAG}dataset": self.dataset,
                f"{TAG}group": self.group,
                f"{TAG}role": "parent",
                f"{TAG}config_hash": self.hash,
                f"{TAG}job_hash": self.hash,
                f"{TAG}pid": str(os.getpid()),
                f"{TAG}host": socket.gethostname(),
            },
        )
        self._t0 = time.perf_counter()
        try:
            mlflow.log_params(flat_params(self._view))
            # the full resolved config (an aggregating run's without the seed it does not use)
            full = without_seed(self.cfg) if self.aggregate else to_container(self.cfg)
            mlflow.log_dict(full, "config.yaml")
            if self.hydra_job is not None:
                self.hydra_job.log_files_at_start(self.client, self.run.info.run_id)
            if self._skippable:
                self._yield_to_older_twins()
        except BaseException as exc:  # `with` calls no __exit__ when __enter__ raises
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _yield_to_older_twins(self) -> None:
        """Twin jobs that both passed `finished_run` at once: the younger waits for the older.

        It then resumes like any job (nothing left to do when the older one FINISHED) and its
        parent ends KILLED with `synque.duplicate_of`, so one FINISHED parent stays per hash.
        """
        assert self.run is not None
        older = self._live_twins(older_than=self.run)
        if not older:
            return
        self._wait_for(older)
        done = self._finished_parent()
        self._duplicate_of = done.info.run_id if done else None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        status = "FINISHED" if exc is None else "FAILED"
        try:
            if mlflow.active_run() is not None:
                mlflow.log_metrics(
                    {
                        "children_logged": self.children_logged,
                        "children_skipped": self.children_skipped,
                        "stage_seconds": time.perf_counter() - self._t0,
                    }
                )
            if exc is not None:
                mlflow.set_tag(f"{TAG}error", _error_line(exc))
                # so that the log artifact says why, next to the tag
                log.error("%s run FAILED: %s", self.stage, _error_line(exc))
            elif self._duplicate_of and not self.children_logged:
                mlflow.set_tag(f"{TAG}duplicate_of", self._duplicate_of)
                status = "KILLED"  # a twin job did all of it
            if self.hydra_job is not None and self.run is not None:
                self.hydra_job.log_files_at_end(self.client, self.run.info.run_id)
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run(status=status)
            self._signals.__exit__(None, None, None)
        return False

    @contextlib.contextmanager
    def child(
        self, dataset: str, group: str = NO_GROUP, tags: Mapping[str, str] | None = None
    ) -> Iterator[Run]:
        """A nested run for one candidate set; FAILED (with the error) if the body raises."""
        child_hash = config_hash(self._view, {"group": group, "dataset": dataset})
        run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=f"{dataset}" + ("" if group == NO_GROUP else f"@{group}"),
            nested=True,
            tags={
                **self.base_tags,
                **{k if k.startswith(TAG) else TAG + k: str(v) for k, v in (tags or {}).items()},
                f"{TAG}dataset": dataset,
                f"{TAG}group": group,
                f"{TAG}role": "child",
                f"{TAG}config_hash": child_hash,
                f"{TAG}job_hash": self.hash,
                f"{TAG}pid": str(os.getpid()),
                f"{TAG}host": socket.gethostname(),
            },
        )
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tag(f"{TAG}error", _error_line(exc))
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")
        self.children_logged += 1


def log_llm_usage(llm: Any, before: Mapping[str, float] | None = None) -> dict[str, float]:
    """Log an LLM backend's usage counters into the active run (the change since `before`).

    Returns the counters now, to pass as `before` next time.
    """
    after = llm.metrics()
    if before is None:
        mlflow.log_metrics(after)
        return after
    delta = {k: after[k] - before.get(k, 0.0) for k in after if not k.endswith(("_rate", "_per_s"))}
    if delta.get("llm_seconds", 0) > 0 and delta.get("llm_calls", 0) > 0:
        delta["llm_calls_per_s"] = delta["llm_calls"] / delta["llm_seconds"]
    mlflow.log_metrics(delta)
    return after

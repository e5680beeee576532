"""Entry point: `python -m synque.run +experiment=NAME [-m key=v1,v2 ...]`.

It only composes: Hydra builds the config, `stage._target_` names the stage function.
Before the stage runs, the command line's values, the tracking store and the stage's input
files are checked, and every error a user can fix becomes one line on stderr
(`synque: error: ...`, see `synque.errors`): exit code 2 for a bad command line, 1 for bad
data or an unreachable service. `HYDRA_FULL_ERROR=1` or `verbose=true` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from synque import SynqueError
from synque.checks import check_store, check_types, check_values
from synque.components import check_groups
from synque.config import project_root, register_resolvers
from synque.data.validate import check_inputs
from synque.errors import USAGE_EXIT, UsageError, explain, usage

log = logging.getLogger("synque")

#: Entry-point flags that are not config keys (they never enter a config hash).
VERBOSE_FLAGS = {f"{p}verbose={v}" for p in ("", "+") for v in ("true", "True", "1", "yes")}
QUIET_FLAGS = {f"{p}verbose={v}" for p in ("", "+") for v in ("false", "False", "0", "no")}
#: Whether the user asked for tracebacks (`HYDRA_FULL_ERROR=1`, `verbose=true`); set by `cli`.
VERBOSE = False
#: `SYNQUE_DRY_RUN=1 python -m synque.run ...`: compose and check everything a stage needs
#: (values, components, the store, every input file) and stop before the stage; a sweep
#: checks each of its jobs. An environment variable, so the command itself stays as typed.
DRY_RUN = "SYNQUE_DRY_RUN"


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    """One Hydra job; its errors are reported here (Hydra would add a line of its own)."""
    try:
        _job(cfg)
    except Exception as exc:
        _report(exc, [])


def _job(cfg: DictConfig) -> None:
    register_resolvers()
    target = cfg.get("stage", {}).get("_target_")
    if not target:
        raise UsageError("no stage selected (use +experiment=NAME or stage=...)")
    check_values(cfg)
    # every component the stage builds is checked before any heavy work; what it finds
    # (an unknown key, a missing setting) is the command line's or a config file's: exit 2
    try:
        check_groups(cfg, ["task", *(cfg.stage.get("uses") or [])])
    except SynqueError as exc:
        raise UsageError(str(exc)) from None
    check_types(cfg)  # `task.max_examples=abc`: the constructors' annotations say int
    check_store(cfg)
    check_inputs(cfg)  # every candidate and real file read before any model loads
    stage = hydra.utils.get_method(str(target))
    if os.environ.get(DRY_RUN) == "1":
        print(f"synque: dry run: {cfg.stage.get('name', target)} checked, nothing run")
        return
    stage(cfg)


def _report(exc: Exception, argv: Sequence[str]) -> None:
    """Exit with one line for an error a user can fix; re-raise bugs and when verbose."""
    found = explain(exc, argv)
    if found is None or VERBOSE:
        raise exc
    message, code = found
    print(f"synque: error: {message}", file=sys.stderr)
    sys.exit(code)


def _flags_first(argv: list[str]) -> list[str]:
    """Let `-m` stand anywhere (`+experiment=x -m seed=1,2`): Hydra's parser wants it first."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return [argv[0], *flags, *(a for a in argv[1:] if a not in ("-m", "--multirun"))]


def cli(argv: Sequence[str] | None = None) -> None:
    """`python -m synque.run`: usage when bare, else Hydra's app with one-line errors.

    Why `HYDRA_FULL_ERROR=1` is set here: it makes Hydra re-raise the original exception
    instead of printing its own shortened traceback, so `explain` sees the real error; the
    user's own setting (or `verbose=true`) decides whether a traceback is shown.
    """
    args = list(sys.argv if argv is None else argv)
    if len(args) == 1:
        print(usage(project_root() / "configs"), file=sys.stderr)
        print("synque: error: no experiment given: add +experiment=NAME", file=sys.stderr)
        sys.exit(USAGE_EXIT)
    verbose = os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a in VERBOSE_FLAGS for a in args)
    global VERBOSE
    VERBOSE = verbose
    args = [a for a in args if a not in VERBOSE_FLAGS | QUIET_FLAGS]
    sys.argv = _flags_first(args)
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except Exception as exc:  # composing the config failed: the command line is at fault
        _report(exc, [a for a in sys.argv[1:] if not a.startswith("-")])


if __name__ == "__main__":
    cli()

"""Every input file of a stage read and checked before the stage starts (and any model loads).

Why here and not in each stage: the entry point calls `check_inputs` between composing the
config and calling the stage, so a malformed candidate file, a missing field, an empty set,
a real sample smaller than asked or a `train` set without labels stops the job with one line
before an embedding model, an LLM or a trainer is built, and before a run is opened.
Reading is cheap next to embedding; what the stage reads again comes from the OS's cache.
Images are listed here (names, manifests); the stages that feed them to a model decode them
in their own `preflight`.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from synque import SynqueError
from synque.data.task import Task

#: Stages that read the task's candidate sets and real sample.
DATA_STAGES = frozenset({"embed", "repr", "rubric", "lens", "train"})


def check_inputs(cfg: DictConfig) -> Task | None:
    """Check the files the stage of `cfg` will read; the task, or None where nothing is read.

    Skipped: stages that read no task files (correlate, select, generate, pipelines, whose
    data may not exist yet), `llm=replay` (released rubrics and judgments stand in for the
    files) and `train` importing recorded performance (its CSV is checked by the stage).
    """
    stage = str(OmegaConf.select(cfg, "stage.name", default="") or "")
    if stage not in DATA_STAGES:
        return None
    if stage in ("rubric", "lens") and OmegaConf.select(cfg, "llm.kind") == "replay":
        return None
    supervised = stage == "train" and _supervised(cfg)
    if stage == "train" and not supervised:
        return None
    from synque.components import build

    task: Task = build(cfg.task, "task")
    try:
        task.preflight(int(cfg.seed))
        if supervised:
            check_labels(task)
    except OSError as exc:  # a layout's folder that is not there (a wrong task.root)
        where = exc.filename or task.root
        raise SynqueError(
            f"task {task.name}: cannot read {where} ({exc.strerror}); check task.root"
        ) from None
    return task


def _supervised(cfg: DictConfig) -> bool:
    """Whether `train` fits a model on labels (not an import of recorded performance)."""
    from synque.components import resolve_target
    from synque.train.base import SupervisedTrainer

    target = resolve_target(cfg.train, "train")
    return isinstance(target, type) and issubclass(target, SupervisedTrainer)


def check_labels(task: Task) -> None:
    """Every candidate set and each group's real test set carries labels."""
    field = task.label_field or "label"
    for group in task.groups():
        test = task.real_test(group)
        if test is None:
            where = task.test_path(group) or f"{task.root}/real/test.*"
            raise SynqueError(
                f"task {task.name}: no labeled real test set ({where}) for train; "
                "add one, or score the sets with repr/lens instead"
            )
        if "label" not in test.columns:
            path = task.test_path(group)
            raise SynqueError(f"{path}: no label field '{field}' (task.label_field)")
        for name in task.candidates(group):
            if "label" not in task.load_candidate(group, name).columns:
                raise SynqueError(
                    f"{task.candidate_path(group, name)}: no label field '{field}' to train on "
                    "(task.label_field)"
                )

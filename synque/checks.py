"""Checks of the composed config that need no data and no model: values and the store.

Why before the stage: Hydra accepts `seed=abc` (the YAML files carry no types) and a
mandatory `???` is only noticed where a stage first reads it, after imports, sometimes
after a model loaded. A store that cannot be written fails only when the first run opens.
Each check answers with one line naming the setting; values are command-line mistakes
(`UsageError`, exit 2), the store is the environment (`SynqueError`, exit 1).
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from synque import SynqueError
from synque.errors import UsageError

#: Top-level settings and the type each must have: (type name, example).
TYPED = {"seed": ("int", "seed=42"), "force": ("bool", ""), "progress": ("bool", "")}


def check_values(cfg: DictConfig) -> None:
    """Types of the top-level settings, and no `???` left in the groups the stage uses."""
    for key, (kind, example) in TYPED.items():
        if key not in cfg:
            continue
        value = cfg[key]
        ok = isinstance(value, bool) if kind == "bool" else _is_int(value)
        if not ok:
            what = f"not an integer (e.g. {example})" if kind == "int" else "not true or false"
            raise UsageError(f"{key}={value}: {what}")
    stage = cfg.get("stage") or {}
    for group in ["stage", "task", *(stage.get("uses") or [])]:
        node = OmegaConf.select(cfg, group, default=None)
        if isinstance(node, DictConfig):
            missing = sorted(OmegaConf.missing_keys(node))
            if missing:
                key = str(missing[0])  # OmegaConf gives the full key (`task.root`)
                key = key if key.startswith(f"{group}.") else f"{group}.{key}"
                raise UsageError(
                    f"{key}: required setting is missing (add {key}=... to the command)"
                )


def check_types(cfg: DictConfig) -> None:
    """Numbers and switches of the components a stage builds, against their constructors.

    Why: `task.max_examples=abc` reaches the task as the string "abc" and fails deep inside
    as a TypeError; the constructor's annotation (`int | None`) says what was meant.
    Only int, float and bool are checked; anything else is the component's own business.
    """
    from synque.components import resolve_target
    from synque.config import to_container

    stage = cfg.get("stage") or {}
    for group, node in _components(cfg, ["task", *(stage.get("uses") or [])]):
        hints = _init_hints(resolve_target(node, group))
        for key, value in to_container(node).items():
            kind = _number_kind(hints.get(key))
            if kind and value is not None and not _fits(value, kind):
                what = {"int": "an integer", "float": "a number", "bool": "true or false"}[kind]
                raise UsageError(f"{group}.{key}={value}: not {what}")


def _components(cfg: DictConfig, groups: list[str]) -> list[tuple[str, DictConfig]]:
    """(name, node) of each component of `groups`; a group of several (`proxy`) gives each."""
    found = []
    for group in groups:
        node = OmegaConf.select(cfg, group, default=None)
        if not isinstance(node, DictConfig):
            continue
        if "_target_" in node:
            found.append((group, node))
            continue
        for key in node:
            child = node[key]
            if isinstance(child, DictConfig) and "_target_" in child:
                found.append((f"{group}.{key}", child))
    return found


def _init_hints(target: object) -> dict[str, object]:
    """Annotations of a class's constructors along its MRO (a subclass's win)."""
    fns = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if isinstance(target, type)
        else [target]
    )
    hints: dict[str, object] = {}
    for fn in reversed(fns):
        try:
            hints.update(typing.get_type_hints(fn))
        except Exception:  # an annotation that does not resolve: check nothing from it
            continue
    return hints


def _number_kind(hint: object) -> str | None:
    """ "int", "float" or "bool" when a hint (or every non-None arm of it) is one of them."""
    arms = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if typing.get_origin(hint) is typing.Union:
        arms = typing.get_args(hint)
    kinds = {a.__name__ for a in arms if a is not type(None) and inspect.isclass(a)}
    plain = [a for a in arms if a is not type(None)]
    if len(kinds) == 1 and len(plain) == 1 and kinds <= {"int", "float", "bool"}:
        return kinds.pop()
    return None


def _fits(value: object, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        int(str(value))
    except ValueError:
        return False
    return True


def check_store(cfg: DictConfig) -> None:
    """A local sqlite store must be creatable and writable before any run opens."""
    from synque.tracking.store import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(cfg)
    db = sqlite_path(uri)
    if db is None:
        return  # a server: `connect` says in one line when it cannot be reached
    where = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking.uri"
    fix = f"set {where} to a sqlite:/// file in a writable folder"
    if db.exists():
        if db.is_dir() or not os.access(db, os.R_OK | os.W_OK):
            raise SynqueError(f"tracking store {uri}: {db} is not a writable file; {fix}")
        return
    folder = _existing_ancestor(db.parent)
    if not folder.is_dir():
        raise SynqueError(f"tracking store {uri}: {folder} is a file, not a folder; {fix}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SynqueError(f"tracking store {uri}: cannot write in {folder}; {fix}")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path

"""One way to build a component: a config node with `_target_`, checked, then instantiated.

Why check first: a typo in a config key would otherwise surface as a TypeError deep inside
a constructor, after models have loaded (or worse, silently fall back to a default). The
check compares the node's keys with the target's signature before any heavy work and answers
with one line: `llm.temprature: unknown key; did you mean temperature?`.

A component class may declare `config_keys`: keys its config carries for the stages (for
example `kind`, `judge_mode`) that are not constructor arguments; they are accepted by the
check and not passed to the constructor.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from synque import SynqueError
from synque.config import to_container

#: Keys every component config may carry for people and reports, never for the constructor.
DESCRIPTIVE_KEYS = frozenset({"_target_", "kind"})


def resolve_target(node: Mapping[str, Any], group: str) -> Any:
    """The class or function a node's `_target_` names (one-line error when it cannot)."""
    target = node.get("_target_")
    if not target:
        raise SynqueError(f"{group}: no _target_ (the class to build) in the config")
    try:
        return hydra.utils.get_object(str(target))
    except Exception as exc:  # ImportError, AttributeError, hydra's own wrappers
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynqueError(f"{group}._target_: cannot import {target} ({cause[:160]})") from None


def accepted_keys(target: Any) -> tuple[set[str], bool]:
    """Keyword names a target accepts, and whether it also takes arbitrary keywords.

    A constructor that forwards `**kwargs` to its base class accepts the base's keywords too,
    so the classes of the MRO are walked until one has no `**kwargs`.
    """
    names: set[str] = set()
    callables = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if inspect.isclass(target)
        else [target]
    )
    for fn in callables:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return names, True
        names |= {
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
    return names, True


def unknown_key_error(group: str, key: str, known: Iterable[str]) -> SynqueError:
    """`group.key: unknown key; did you mean x?` (or the list of known keys)."""
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:  # `lr_rate` for `lr`: a known key that is one `_` part of the typo
        close = [k for k in known if k in key.split("_")][:1]
    hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
    return SynqueError(f"{group}.{key}: unknown key; {hint}")


def check_component(
    node: DictConfig | Mapping[str, Any],
    group: str,
    runtime: Iterable[str] = (),
    require: bool = True,
) -> Any:
    """Check a component node against its target; return the target.

    `runtime` names the arguments the caller passes itself (for example `cache_dir`);
    `require=False` skips the check for missing required settings (the early check before a
    stage runs does not know what the stage will pass).
    """
    data = to_container(node) if isinstance(node, DictConfig) else dict(node)
    target = resolve_target(data, group)
    names, open_ended = accepted_keys(target)
    extra = set(getattr(target, "config_keys", ())) | DESCRIPTIVE_KEYS
    if not open_ended:
        for key in data:
            if key not in names and key not in extra:
                raise unknown_key_error(group, key, names | extra - {"_target_"})
    required = _required(target) - set(data) - set(runtime) if require else set()
    if required:
        raise SynqueError(f"{group}: missing setting {sorted(required)[0]} for {data['_target_']}")
    return target


def _required(target: Any) -> set[str]:
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {
        p.name
        for p in params
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name != "self"
    }


def build(node: DictConfig | Mapping[str, Any], group: str, **runtime: Any) -> Any:
    """Check `node` and instantiate its `_target_` with the node's keys plus `runtime`."""
    target = check_component(node, group, runtime)
    data = to_container(node) if isinstance(node, DictConfig) else dict(node)
    skip = set(getattr(target, "config_keys", ())) | DESCRIPTIVE_KEYS
    kwargs = {k: v for k, v in data.items() if k not in skip}
    missing = [k for k, v in kwargs.items() if v == "???"]
    if missing:
        raise SynqueError(
            f"{group}.{missing[0]}: required setting is missing (set {group}.{missing[0]}=...)"
        )
    try:
        return hydra.utils.instantiate(
            OmegaConf.create({"_target_": data["_target_"]}), **kwargs, **runtime, _convert_="all"
        )
    except InstantiationException as exc:
        if isinstance(exc.__cause__, SynqueError):  # the component's own one-line error
            raise exc.__cause__ from None
        raise


def check_groups(cfg: DictConfig, groups: Iterable[str]) -> None:
    """Check every named component group of `cfg` that has a `_target_`, before any work."""
    for group in groups:
        node = OmegaConf.select(cfg, group, default=None)
        if isinstance(node, DictConfig) and "_target_" in node:
            check_component(node, group, require=False)

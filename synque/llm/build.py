"""Building an LLM backend from an `llm` config: the one entry point, `build_llm`.

A config names its class with `_target_` (configs/llm/*.yaml) and is checked against the
constructor's signature by :mod:`synque.components` (`llm.temprature: unknown key; ...`).
A plain mapping without `_target_` (tests, notebooks) names its backend with `kind`; the
kind -> class mapping is read off the backend classes themselves, so a new backend is a new
module with an `LLM` subclass and a config file, and nothing here changes.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from synque import SynqueError
from synque.components import DESCRIPTIVE_KEYS, accepted_keys, build, check_component
from synque.config import to_container
from synque.llm.base import LLM
from synque.llm.cache import CACHE_FILE, ResponseCache

GROUP = "llm"
#: What `build_llm` passes itself: the opened `ResponseCache` (the config's `cache: true|false`
#: only says whether to open one, so it is a `config_keys` entry, not a constructor value).
RUNTIME = ("cache",)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


@functools.cache
def _import_backend_modules() -> None:
    """Import every module of this package once, so a backend in a new file is found too."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")


def backends() -> dict[str, type[LLM]]:
    """`kind` -> backend class, for every `LLM` subclass defined in the synque.llm package."""
    _import_backend_modules()
    return {
        cls.kind: cls
        for cls in _subclasses(LLM)
        if cls.__module__.startswith(f"{__package__}.") and "kind" in vars(cls)
    }


def _target_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _node(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain dict with a `_target_` (found by `kind` when it has none).

    `None` values are dropped so the constructor's defaults apply (`threads: null`).
    """
    node = {k: v for k, v in to_container(cfg).items() if v is not None}
    kind = node.get("kind")
    if "_target_" not in node:
        known = backends()
        if kind not in known:
            raise SynqueError(f"llm.kind must be one of {sorted(known)}, got {kind!r}")
        node["_target_"] = _target_name(known[kind])
    return node


def _checked(node: dict[str, Any]) -> type[LLM]:
    target = check_component(node, GROUP, RUNTIME)
    if not (isinstance(target, type) and issubclass(target, LLM)):
        raise SynqueError(f"llm._target_: {node['_target_']} is not an LLM backend class")
    kind = node.get("kind")
    if kind is not None and kind != target.kind:
        raise SynqueError(
            f"llm.kind: {kind!r} does not match _target_ {node['_target_']} (kind {target.kind!r})"
        )
    return target


def check_llm(cfg: DictConfig | Mapping[str, Any]) -> type[LLM]:
    """The backend class of an `llm` config, checked without building anything.

    Why: stages call it before any run starts, so a typo costs no model load and leaves no
    FAILED run behind.
    """
    return _checked(_node(cfg))


def check_llm_inputs(cfg: DictConfig | Mapping[str, Any], modality: str) -> type[LLM]:
    """`check_llm`, and that the backend can see the task's examples (`text` or `image`).

    Why before any run: a text-only model given images, or a model that is not on this
    machine, must stop with one line naming `llm.model`, not fail after the first run opened.
    """
    node = _node(cfg)
    target = _checked(node)
    target.check_inputs(node, modality)
    return target


def llm_kind(cfg: DictConfig | Mapping[str, Any]) -> str:
    """The backend kind a config builds (that of its `_target_` class, or its `kind`)."""
    return check_llm(cfg).kind


def build_llm(cfg: DictConfig | Mapping[str, Any], cache_dir: Path | str | None) -> LLM:
    """Build the backend an `llm` config describes.

    `cache_dir` holds the shared response cache `llm_cache.sqlite` (another name with
    `cache_file`; none with `cache: false` or `cache_dir=None`); `replay` never caches.
    Unknown or missing settings raise a one-line `SynqueError` naming them.
    """
    node = _node(cfg)
    target = _checked(node)
    cache = None
    if target.uses_cache and node.get("cache", True) and cache_dir is not None:
        cache = ResponseCache(Path(cache_dir) / str(node.get("cache_file", CACHE_FILE)))
    try:
        return build(node, GROUP, cache=cache)
    except BaseException:
        if cache is not None:
            cache.close()
        raise


def _keys(cls: type[LLM]) -> set[str]:
    return (accepted_keys(cls)[0] | set(cls.config_keys) | DESCRIPTIVE_KEYS) - {"self"}


def backend_keys() -> dict[str, set[str]]:
    """Config keys each backend accepts (constructor keywords + `config_keys` + descriptive)."""
    return {kind: _keys(cls) for kind, cls in backends().items()}


def common_keys() -> set[str]:
    """Config keys every backend accepts."""
    return set.intersection(*backend_keys().values())

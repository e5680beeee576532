"""The proxy registry: proxies score a synthetic set against a small real sample.

Every proxy takes two embedding matrices (``synth`` and ``real``, shape ``[n, dim]``) and returns
one float.  The registry lets configs name proxies by string, and ``higher_is_better`` tells the
ranking code which direction is good without hard-coding it per proxy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PROXIES", "ProxySpec", "ProxyWarning", "compute_proxy", "register"]

# Keys that describe a proxy in the config but are not arguments of its function.
CONFIG_ONLY_KEYS = frozenset({"name", "higher_is_better", "variant"})


class ProxyWarning(UserWarning):
    """A proxy computed a value but the user should know it is weak (e.g. too few samples).

    Proxies emit it with ``warnings.warn(msg, ProxyWarning)``; the repr stage records each one as
    the run tag ``synque.warning.<proxy>`` so the caveat stays next to the value in MLflow.
    """


@dataclass(frozen=True)
class ProxySpec:
    """A registered proxy: its function and which direction of its value means "more real"."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool


PROXIES: dict[str, ProxySpec] = {}


def register(name: str, higher_is_better: bool) -> Callable[[Callable[..., float]], Callable]:
    """Add a proxy function to ``PROXIES`` so configs can refer to it by ``name``."""

    def decorator(fn: Callable[..., float]) -> Callable[..., float]:
        if name in PROXIES:
            raise ValueError(f"proxy {name!r} is already registered")
        PROXIES[name] = ProxySpec(name=name, fn=fn, higher_is_better=higher_is_better)
        return fn

    return decorator


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Turn an OmegaConf node (or any mapping) into plain Python containers."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # omegaconf is optional for callers passing plain dicts
        DictConfig = None  # noqa: N806
    if DictConfig is not None and isinstance(params, DictConfig):
        return dict(OmegaConf.to_container(params, resolve=True))  # type: ignore[arg-type]
    return dict(params)


def _validate_inputs(synth: Any, real: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fail early with a readable one-line message instead of deep inside sklearn or faiss."""
    arrays = []
    for label, arr in (("synth", synth), ("real", real)):
        a = np.asarray(arr)
        if a.ndim != 2:
            raise ValueError(f"{label} embeddings must be 2-D [n, dim], got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{label} embeddings are empty (0 rows)")
        if a.shape[1] == 0:
            raise ValueError(f"{label} embeddings have dimension 0")
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise ValueError(f"{label} embeddings must be real numbers, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{label} embeddings contain NaN or infinite values")
        arrays.append(a)
    s, r = arrays
    if s.shape[1] != r.shape[1]:
        raise ValueError(f"embedding dimensions differ: synth has {s.shape[1]}, real {r.shape[1]}")
    return s, r


def _check_params(spec: ProxySpec, params: dict[str, Any]) -> None:
    """Reject unknown option names so a typo in a config does not silently fall back."""
    if "seed" in params:
        raise ValueError("pass the seed through compute_proxy(seed=...), not in params")
    sig = inspect.signature(spec.fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    kw_only = inspect.Parameter.KEYWORD_ONLY
    allowed = {n for n, p in sig.parameters.items() if p.kind is kw_only and n != "seed"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for proxy {spec.name!r}; allowed: {sorted(allowed)}"
        )


def check_proxy_config(name: str, params: Mapping[str, Any]) -> None:
    """Validate a proxy's name and options without computing it (before any heavy work)."""
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}; known proxies: {sorted(PROXIES)}")
    kwargs = {k: v for k, v in _plain_params(params).items() if k not in CONFIG_ONLY_KEYS}
    _check_params(PROXIES[name], kwargs)


def compute_proxy(
    name: str,
    synth: np.ndarray,
    real: np.ndarray,
    params: Mapping[str, Any],
    seed: int = 42,
) -> float:
    """Look up proxy ``name``, validate the inputs and return its value as a float."""
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}; known proxies: {sorted(PROXIES)}")
    spec = PROXIES[name]
    kwargs = {k: v for k, v in _plain_params(params).items() if k not in CONFIG_ONLY_KEYS}
    _check_params(spec, kwargs)
    s, r = _validate_inputs(synth, real)
    return float(spec.fn(s, r, seed=seed, **kwargs))

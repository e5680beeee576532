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

__all__ = [
    "PROXIES",
    "ProxySpec",
    "ProxyWarning",
    "compute_proxy",
    "compute_proxy_repeats",
    "register",
]

# Keys that describe a proxy in the config but are not arguments of its function.
CONFIG_ONLY_KEYS = frozenset({"name", "higher_is_better", "variant", "noise_seeds"})


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
    #: The keyword whose value draws the proxy's randomness ("seed", "split_seed"), or None
    #: for a deterministic proxy; `compute_proxy_repeats` varies it to measure the noise.
    noise: str | None = None


PROXIES: dict[str, ProxySpec] = {}


def register(
    name: str, higher_is_better: bool, noise: str | None = None
) -> Callable[[Callable[..., float]], Callable]:
    """Add a proxy function to ``PROXIES`` so configs can refer to it by ``name``.

    ``noise`` names the keyword that seeds the proxy's own randomness (k-means, a split), so
    the option ``noise_seeds`` can repeat it and tell a real difference from a lucky draw.
    """

    def decorator(fn: Callable[..., float]) -> Callable[..., float]:
        if name in PROXIES:
            raise ValueError(f"proxy {name!r} is already registered")
        PROXIES[name] = ProxySpec(name=name, fn=fn, higher_is_better=higher_is_better, noise=noise)
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
    plain = _plain_params(params)
    kwargs = {k: v for k, v in plain.items() if k not in CONFIG_ONLY_KEYS}
    _check_params(PROXIES[name], kwargs)
    noise_seeds(name, plain)


def noise_seeds(name: str, params: Mapping[str, Any]) -> int:
    """How often to compute the proxy with a different noise seed (the `noise_seeds` option).

    Why refuse more than one for a deterministic proxy: its repeats would be identical and a
    standard deviation of 0 would read as "no noise measured" rather than "none possible".
    """
    value = _plain_params(params).get("noise_seeds", 1)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"noise_seeds must be an integer >= 1, got {value!r}")
    if value > 1 and PROXIES[name].noise is None:
        raise ValueError(f"proxy {name!r} has no random part; noise_seeds must be 1")
    return value


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


def compute_proxy_repeats(
    name: str,
    synth: np.ndarray,
    real: np.ndarray,
    params: Mapping[str, Any],
    seed: int = 42,
) -> list[float]:
    """The proxy computed `noise_seeds` times, its noise seed counting up from the configured one.

    The first value is exactly `compute_proxy(...)`, so `noise_seeds: 1` keeps today's numbers;
    the spread of the others is the proxy's own noise (MAUVE's k-means, PAD's split), which
    `select` needs to tell a real difference between candidate sets from a lucky draw.
    """
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}; known proxies: {sorted(PROXIES)}")
    spec = PROXIES[name]
    plain = _plain_params(params)
    repeats = noise_seeds(name, plain)
    kwargs = {k: v for k, v in plain.items() if k not in CONFIG_ONLY_KEYS}
    _check_params(spec, kwargs)
    s, r = _validate_inputs(synth, real)
    values = []
    for i in range(repeats):
        opts, run_seed = dict(kwargs), seed
        if i and spec.noise == "seed":
            run_seed = seed + i
        elif i and spec.noise is not None:
            opts[spec.noise] = int(kwargs.get(spec.noise, _default(spec, spec.noise))) + i
        values.append(float(spec.fn(s, r, seed=run_seed, **opts)))
    return values


def _default(spec: ProxySpec, keyword: str) -> Any:
    """The function's default for `keyword` (the base noise seed when the config omits it)."""
    return inspect.signature(spec.fn).parameters[keyword].default

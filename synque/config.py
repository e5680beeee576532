"""Configuration helpers: resolvers, the config hash that identifies a run, flattening, checks.

Kept free of heavy imports so composing a config (and skipping a finished run) stays fast.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: Top-level keys that say *where* things go, not *what* is computed: left out of the hash.
UNHASHED_KEYS = ("paths", "tracking", "hydra", "force", "progress")
#: Keys every stage depends on; a stage adds the groups it reads with `stage.uses`.
STAGE_KEYS = ("stage", "task", "seed")
#: Settings added after runs were logged, with the default that means "as before": left out of
#: the hash (and the params) while they hold it, so upgrading never re-runs a finished job.
#: A dotted path names a nested node (`proxy.pad`).
LATE_DEFAULTS: dict[str, dict[str, Any]] = {
    "task": {"text_field": None},
    "embedder": {"backend": "fp32"},
    "llm": {"score_batch_tokens": 512},
    "proxy.pad": {"noise_seeds": 1},
    "proxy.mauve": {"noise_seeds": 1},
}


def project_root() -> Path:
    """Root of the checkout (the folder holding `configs/`), or the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "configs").is_dir() else Path.cwd()


def register_resolvers() -> None:
    """Resolvers used by the YAML files; safe to call more than once."""
    if not OmegaConf.has_resolver("synque.root"):
        OmegaConf.register_new_resolver("synque.root", lambda: str(project_root()))


register_resolvers()


def to_container(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Resolved plain-python copy of a config."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def stage_view(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The part of the config a stage depends on: `stage`, `task`, `seed` + `stage.uses`.

    Why: changing the LLM must not invalidate finished embedding runs, and a run's params
    should show what it used, not every group of the app.
    """
    data = _without_late_defaults(to_container(cfg))
    uses = (data.get("stage") or {}).get("uses")
    if uses is None:
        return {k: v for k, v in data.items() if k not in UNHASHED_KEYS}
    return {k: data[k] for k in (*STAGE_KEYS, *uses) if k in data}


def _without_late_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the `LATE_DEFAULTS` settings that still hold their default."""
    for path, defaults in LATE_DEFAULTS.items():
        *parents, name = path.split(".")
        holder: Any = data
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        node = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(node, dict):
            holder[name] = {
                k: v for k, v in node.items() if not (k in defaults and v == defaults[k])
            }
    return data


def config_hash(cfg: DictConfig | Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """sha256 of what the stage depends on (see `stage_view`): the identity of a run."""
    data = stage_view(cfg)
    if extra:
        data["__extra__"] = dict(extra)
    blob = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield `a.b.c` keys of a nested mapping (lists are kept as one value)."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], data


def flat_params(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """Flattened resolved config as MLflow params (values capped at MLflow's 6000 chars)."""
    params = {}
    for key, value in flatten(stage_view(cfg)):
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        params[key] = text[:6000]
    return params

"""The one place where a mistake becomes one line on stderr, with an exit code.

Why one place: a newcomer's wrong command used to end in a traceback whose last line was
Hydra's or OmegaConf's wording (`MissingMandatoryValue`, `no viable alternative at input`),
far from the setting to fix. `explain` turns every error a user can fix into `what is wrong,
which setting or file, what to do`, and says whether the command line (exit 2) or the
data/environment (exit 1) is at fault. Errors it does not know are bugs: they keep their
traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from synque import SynqueError

#: Exit code of a command line that cannot be composed or has a bad value.
USAGE_EXIT = 2
#: Exit code of bad data, a missing file or an unreachable service.
ERROR_EXIT = 1


class UsageError(SynqueError):
    """A bad command line (unknown key, bad value, missing setting): exit code 2."""


def experiments(configs: Path) -> list[str]:
    """Names `+experiment=` accepts (the files of `configs/experiment/`)."""
    return sorted(p.stem for p in (configs / "experiment").glob("*.yaml"))


def usage(configs: Path) -> str:
    """What a bare `python -m synque.run` prints: how to start, which experiments exist."""
    names = experiments(configs)
    lines, line = [], " "
    for name in names:
        if len(line) + len(name) + 1 > 78:
            lines.append(line)
            line = " "
        line += f" {name}"
    lines.append(line)
    return "\n".join(
        [
            "usage: python -m synque.run +experiment=NAME [key=value ...] [-m key=v1,v2 ...]",
            "",
            "  python -m synque.run +experiment=quickstart    # text: the whole study, offline",
            "  python -m synque.run +experiment=digits        # images: the whole study, offline",
            "",
            "experiments (configs/experiment/):",
            *lines,
            "",
            "the composed config of one: python -m synque.run +experiment=NAME --cfg job",
            "groups and their options:   python -m synque.run --help",
            "docs: README.md, docs/architecture.md, docs/extending.md",
        ]
    )


def explain(exc: BaseException, argv: Sequence[str] = ()) -> tuple[str, int] | None:
    """(one-line message, exit code) for an error a user can fix; None for a bug.

    `argv` is the command line's overrides: a parse error names the override it failed on.
    """
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import (
        InterpolationResolutionError,
        MissingMandatoryValue,
        ValidationError,
    )

    if isinstance(exc, UsageError):
        return _one_line(str(exc)), USAGE_EXIT
    if isinstance(exc, SynqueError):
        return _one_line(str(exc)), ERROR_EXIT
    if isinstance(exc, MissingConfigException):
        return _missing_option(exc, argv), USAGE_EXIT
    if isinstance(exc, OverrideParseException):
        return _bad_override(exc, argv), USAGE_EXIT
    if isinstance(exc, ConfigCompositionException):
        return _composition(exc, argv), USAGE_EXIT
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", "") or "a setting"
        return f"{key}: required setting is missing (add {key}=... to the command)", USAGE_EXIT
    # a value of the wrong type, an `${oc.env:...}` that cannot resolve; other OmegaConf
    # errors (a key the code reads but the config lacks) are bugs and keep their traceback
    if isinstance(exc, ValidationError | InterpolationResolutionError):
        key = getattr(exc, "full_key", "")
        what = _one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return (f"{key}: {what}" if key else what), USAGE_EXIT
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def _missing_option(exc: BaseException, argv: Sequence[str]) -> str:
    """`llm=nope` / `+experiment=nope`: name the group, the closest option, how to list them."""
    missing = str(getattr(exc, "missing_cfg_file", "") or "")
    options = [str(o) for o in (getattr(exc, "options", None) or [])]
    if "/" not in missing:  # a primary config, not a group option
        return _one_line(str(exc).splitlines()[0])
    group, _, option = missing.rpartition("/")
    override = next((a for a in argv if a.lstrip("+~").split("=")[0] == group), f"{group}=...")
    close = difflib.get_close_matches(option, options, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    if group == "experiment":
        listing = "a bare `python -m synque.run` lists them"
    else:
        listing = f"the options: {', '.join(options)}" if options else "the group has no options"
    noun = "experiment" if group == "experiment" else f"{group} option"
    return f"{override}: no {noun} '{option}'; {hint}{listing}"


def _bad_override(exc: BaseException, argv: Sequence[str]) -> str:
    """An override Hydra cannot parse; `{...}` values are usually quotes a shell removed."""
    bad = _unparsable(argv)
    if bad is None:
        return "cannot parse the command line: " + _one_line(str(exc).splitlines()[0])
    key, _, value = bad.partition("=")
    if "{" in value or "}" in value:
        if key.lstrip("+") == "task.text_template" and re.fullmatch(r"\{\w+\}", value):
            field = value[1:-1]
            hint = f"use task.text_field={field}, or quote the whole override"
        else:
            hint = "quote the whole override"
        return (
            f"{bad}: Hydra reads {{...}} as a dictionary (the shell removed your quotes); "
            f"{hint}: \"{key}='{value}'\""
        )
    if "=" not in bad:
        return f"{bad}: an override needs a value ({bad}=VALUE)"
    detail = _one_line(str(exc).splitlines()[0])
    return f"{bad}: cannot parse this override ({detail}); quote the value: \"{key}='{value}'\""


def _unparsable(argv: Sequence[str]) -> str | None:
    """The first override of `argv` Hydra's grammar rejects."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            return arg
    return None


def _composition(exc: BaseException, argv: Sequence[str]) -> str:
    """`foo=1`: an unknown key; say how to add one and where the keys are listed."""
    text = str(exc)
    found = re.search(r"Could not override '([^']+)'", text)
    if found:
        key = found.group(1)
        override = next((a for a in argv if a.split("=")[0] == key), f"{key}=...")
        cause = exc.__cause__
        if cause is not None and "not in struct" in str(cause):
            hint = _close_key(key)
            return (
                f"{override}: unknown key '{key}'{hint}; a new key needs a leading + "
                f"(+{override}); the keys: python -m synque.run +experiment=NAME --cfg job"
            )
        why = _one_line(str(cause).splitlines()[0]) if cause is not None else "cannot be set"
        return f"{override}: {why}"
    return _one_line(text.splitlines()[0] if text else type(exc).__name__)


def _close_key(key: str) -> str:
    """`; did you mean llm.temperature?` from the keys of the default config, if one is close."""
    try:
        from hydra import compose, initialize_config_dir

        from synque.config import project_root

        with initialize_config_dir(str(project_root() / "configs"), version_base="1.3"):
            cfg = compose("config")
    except Exception:  # the hint is a courtesy: never let it hide the error itself
        return ""
    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
    return f" (did you mean {'.'.join(filter(None, [parent, close[0]]))}?)" if close else ""

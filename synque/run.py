"""Entry point: `python -m synque.run +experiment=NAME [-m key=v1,v2 ...]`.

It only composes: Hydra builds the config, `stage._target_` names the stage function.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from synque import SynqueError
from synque.components import check_groups
from synque.config import register_resolvers

log = logging.getLogger("synque")


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    register_resolvers()
    target = cfg.get("stage", {}).get("_target_")
    if not target:
        print(
            "synque: error: no stage selected (use +experiment=NAME or stage=...)", file=sys.stderr
        )
        sys.exit(2)
    try:
        # every component the stage builds is checked before any heavy work
        check_groups(cfg, ["task", *(cfg.stage.get("uses") or [])])
        stage = hydra.utils.get_method(str(target))
        stage(cfg)
    except SynqueError as exc:
        print(f"synque: error: {exc}", file=sys.stderr)
        sys.exit(1)


def _flags_first(argv: list[str]) -> list[str]:
    """Let `-m` stand anywhere (`+experiment=x -m seed=1,2`): Hydra's parser wants it first."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return [argv[0], *flags, *(a for a in argv[1:] if a not in ("-m", "--multirun"))]


if __name__ == "__main__":
    sys.argv = _flags_first(sys.argv)
    main()

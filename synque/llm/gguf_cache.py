"""A GGUF model converted once into a plain Hugging Face folder, which later loads reuse.

Why: transformers parses a GGUF file's metadata three times per load (config, tokenizer,
model) and de-quantises every tensor, so the packaged SmolLM2-135M took 18-30 s to load on
two cores, and every synque process that judges, generates or fine-tunes with it paid that
again (each job of a multirun, each CLI call). The converted folder (config, tokenizer,
float32 safetensors: about 0.5 GiB for SmolLM2) loads in about 0.3 s (a whole judge
process, imports included, in about 4.5 s against 21 s) with the same weights, token ids
and logits (tests/llm/test_gguf_cache.py, bench/bench_model_load.py).

Where: `$SYNQUE_MODEL_CACHE` (default `~/.cache/synque/models`; `off` turns the conversion
off), one folder per GGUF file, keyed by the file's path, size and modification time and by
the transformers version that de-quantised it. A folder appears by one atomic rename once
it is complete, so parallel jobs never read half of one; a job that loses that race keeps
its own load and drops its copy. Only float32 loads use it (the CPU default): that is the
conversion whose equality is tested.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Environment variable naming the folder of converted models (`off`: no conversion).
ENV = "SYNQUE_MODEL_CACHE"


def model_cache_dir() -> Path | None:
    """The folder of converted models, or None when `$SYNQUE_MODEL_CACHE` is `off`."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "false", "none"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "synque" / "models"


def converted_folder(gguf_path: Path) -> Path | None:
    """Where the conversion of `gguf_path` lives (whether or not it exists yet); None when
    conversion is off or `gguf_path` is not a local file."""
    import transformers

    root = model_cache_dir()
    if root is None or not gguf_path.is_file():  # a name on the Hub: transformers resolves it
        return None
    stat = gguf_path.stat()
    identity = f"{gguf_path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    identity += f"\0transformers {transformers.__version__}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return root / f"{gguf_path.stem}-{digest}"


def save_converted(tokenizer: Any, net: Any, folder: Path) -> bool:
    """Write tokenizer, config and float32 weights into `folder` by an atomic rename.

    Returns whether this call created it. A failure (disk full, read-only home) costs a
    warning and nothing else: the caller already holds the loaded model.
    """
    from safetensors.torch import save_model

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=".part-", dir=folder.parent))
    except OSError as exc:
        log.warning("could not keep a converted copy of the model in %s: %s", folder, exc)
        return False
    try:
        config = copy.deepcopy(net.config)
        if hasattr(config, "quantization_config"):  # the weights below are plain float32
            del config.quantization_config
        config.save_pretrained(part)
        save_model(net, str(part / "model.safetensors"))  # tied weights stored once
        tokenizer.save_pretrained(part)
        os.rename(part, folder)  # fails when another job renamed its copy first
        return True
    except OSError as exc:
        if not folder.is_dir():
            log.warning("could not keep a converted copy of the model in %s: %s", folder, exc)
        return False
    finally:
        shutil.rmtree(part, ignore_errors=True)


def load_gguf(source: str, gguf: str, dtype: Any, **model_kwargs: Any) -> tuple[Any, Any]:
    """(tokenizer, causal LM) of `source/gguf`: from its converted folder when there is one,
    else from the GGUF file (then converted for the next load). `model_kwargs` go to the
    GGUF load only (e.g. a `GgufConfig`); the converted folder holds plain layers already."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = converted_folder(Path(source) / gguf) if dtype == torch.float32 else None
    if folder is not None and folder.is_dir():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            return tokenizer, AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        except (OSError, ValueError) as exc:
            log.warning("converted model %s unreadable (%s); loading the GGUF file", folder, exc)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
    net = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=dtype, **model_kwargs)
    if folder is not None and not folder.is_dir():
        save_converted(tokenizer, net, folder)
    return tokenizer, net

"""Images inside chat messages: one part format for every backend, keyed by content.

An image travels through synque as a message part

    {"type": "image", "image": "/path/to/file.png", "sha256": "<digest of the bytes>",
     "max_size": [224, 512]}

Why this shape: the cache key of a request must follow what the model sees, not where the
file lies, so :func:`key_view` drops the path and keeps the digest (a moved file still hits
the cache, an edited one does not); `max_size` is in the key because it changes the pixels
the model gets. Backends turn a part into what they need at the last moment: a PIL image
(`local`, `vllm`) or a base64 data URL (`openai`), so thousands of prompts never hold
thousands of decoded images.

`max_size` is (shorter side, longer side): an image whose shorter side exceeds the first
or whose longer side exceeds the second is scaled down, aspect kept (the paper's bound for
its o4-mini rubrics is 224 x 512); smaller images are sent as they are.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

from synque import SynqueError
from synque.data.images import image_key, read_image

IMAGE = "image"
#: The paper's bound: (shorter side, longer side) in pixels.
DEFAULT_MAX_SIZE = (224, 512)


def image_part(
    path: str | Path, digest: str | None = None, max_size: Sequence[int] | None = None
) -> dict[str, Any]:
    """The message part showing the image at `path` (digest read from the file if not given)."""
    size = list(max_size) if max_size is not None else list(DEFAULT_MAX_SIZE)
    if len(size) != 2 or min(int(s) for s in size) <= 0:
        raise SynqueError(f"max_image_size must be two positive sizes [short, long], got {size}")
    return {
        "type": IMAGE,
        IMAGE: str(path),
        "sha256": digest or image_key(path),
        "max_size": [int(s) for s in size],
    }


def is_image_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == IMAGE


def message_images(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The image parts of a conversation, in order."""
    found = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            found += [p for p in content if is_image_part(p)]
    return found


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    return bool(message_images(messages))


def key_view(messages: Sequence[Any]) -> list[Any]:
    """Messages as they enter a cache key: image parts without their path.

    Messages without image parts come back unchanged, so the keys of text requests are the
    same as before images existed (an old cache still hits).
    """
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(is_image_part(p) for p in content):
            parts = [
                {k: v for k, v in p.items() if k != IMAGE} if is_image_part(p) else p
                for p in content
            ]
            message = {**message, "content": parts}
        out.append(message)
    return out


def fit(img: Image.Image, max_size: Sequence[int]) -> Image.Image:
    """`img` scaled down (aspect kept) so its shorter side <= max_size[0] and longer <= [1]."""
    short, long = sorted(img.size)
    scale = min(1.0, max_size[0] / short, max_size[1] / long)
    if scale >= 1.0:
        return img
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    return img.resize(size, Image.Resampling.BICUBIC)


@functools.lru_cache(maxsize=64)
def _load(path: str, digest: str, max_size: tuple[int, int]) -> Image.Image:
    # keyed by digest too: a file edited during a session is read again
    return fit(read_image(path), max_size)


def load_image(part: Mapping[str, Any]) -> Image.Image:
    """The RGB image a part shows, fitted to its bound (the last few are kept in memory)."""
    size = part.get("max_size") or DEFAULT_MAX_SIZE
    return _load(str(part[IMAGE]), str(part.get("sha256", "")), (int(size[0]), int(size[1])))


@functools.lru_cache(maxsize=64)
def _data_url(path: str, digest: str, max_size: tuple[int, int]) -> str:
    buffer = BytesIO()
    _load(path, digest, max_size).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_url(part: Mapping[str, Any]) -> str:
    """The part's fitted image as a PNG data URL (lossless: the model sees the pixels we do)."""
    size = part.get("max_size") or DEFAULT_MAX_SIZE
    return _data_url(str(part[IMAGE]), str(part.get("sha256", "")), (int(size[0]), int(size[1])))


def openai_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages in the OpenAI chat format: image parts become `image_url` data URLs."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(is_image_part(p) for p in content):
            content = [
                {"type": "image_url", "image_url": {"url": data_url(p)}} if is_image_part(p) else p
                for p in content
            ]
        out.append({**message, "content": content})
    return out

"""Image embedders: reading images, the content key, and the bases every image model shares.

Items are image file paths. The cache key is the sha256 of the file's bytes, so a moved or
renamed file is still a cache hit and a file changed in place is not. Every image is read with
Pillow and turned into 8-bit RGB (or grey) the same way for every model, so two embedders
differ only in their model, never in how they decoded the files.

Models live in `image_models.py` (packaged EfficientNet-Lite0 and FID Inception, torchvision /
timm / open_clip by name) and `image_hf.py` (Hugging Face encoders); `PixelEmbedder` here
needs no model at all and is the baseline every learned embedder should beat.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synque import SynqueError
from synque.data.images import RESAMPLE, image_key, read_image, resize_square
from synque.embed.base import CachedEmbedder
from synque.utils.torch_threads import torch_threads

DTYPES = ("float32", "bfloat16")


def check_choice(setting: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        known = ", ".join(choices)
        raise SynqueError(f"embedder.{setting}: unknown value '{value}'; choose one of {known}")
    return value


def check_size(size: int, smallest: int = 1) -> int:
    if int(size) < smallest:
        raise SynqueError(f"embedder.size: {size} is too small (at least {smallest} pixels)")
    return int(size)


def slug(*parts: object) -> str:
    """An embedder id from its parts: file-name safe, one dash between parts."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", str(p)).strip("_") for p in parts if p != "")


class ImageEmbedder(CachedEmbedder):
    """Base of image embedders: paths in, file-content keys, per-batch reading and resizing."""

    unit = "image"
    chunk_size = 256

    def item_key(self, item: str | Path) -> str:
        return image_key(item)


class PixelEmbedder(ImageEmbedder):
    """Raw pixels: the image resized to size x size (grey or RGB), flattened, scaled to [0, 1].

    Flattening order is row, column, channel. No model, no dtype: the vectors are exact.
    """

    #: `model` is read by the stages (MLflow tag), not by the constructor.
    config_keys = ("model",)

    def __init__(
        self,
        cache_dir: Path | str,
        size: int = 32,
        grey: bool = False,
        resample: str = "bilinear",
        progress: bool = True,
    ) -> None:
        self.size = check_size(size)
        self.grey = bool(grey)
        self.resample = check_choice("resample", resample, list(RESAMPLE))
        mode = "grey" if self.grey else "rgb"
        super().__init__(slug("pixels", mode, f"{self.size}px", self.resample), cache_dir, progress)

    def compute(self, items: list[str | Path]) -> np.ndarray:
        rows = []
        for path in items:
            img = read_image(path).convert("L") if self.grey else read_image(path)
            rows.append(resize_square(img, self.size, self.resample))
        return np.stack(rows).reshape(len(items), -1).astype(np.float32) / 255.0


def default_device(device: str | None) -> str:
    """`device`, or cuda when present, else cpu."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchImageEmbedder(ImageEmbedder):
    """Base of torch models: batching, device, threads, float32 or bfloat16 autocast.

    Subclasses implement `load()` (build the model once, on first use: warm runs that hit the
    cache never pay for it), `prepare(images)` (a batch of RGB images -> input tensor) and
    `forward(x)` (input tensor -> [batch, dim] features).
    """

    def __init__(
        self,
        id_parts: Sequence[object],
        cache_dir: Path | str,
        dtype: str = "float32",
        batch_size: int = 32,
        device: str | None = None,
        threads: int | None = None,
        progress: bool = True,
    ) -> None:
        self.dtype = check_choice("dtype", dtype, DTYPES)
        if int(batch_size) < 1:
            raise SynqueError(f"embedder.batch_size: {batch_size} must be at least 1")
        self.batch_size = int(batch_size)
        self.device_setting = device or None
        self.threads = threads
        self._model: Any = None
        super().__init__(slug(*id_parts, self.dtype), cache_dir, progress)
        self.chunk_size = max(self.batch_size * 4, 64)

    @property
    def device(self) -> str:
        return default_device(self.device_setting)

    @abstractmethod
    def load(self) -> Any:
        ...

    @abstractmethod
    def prepare(self, images: list[Image.Image]) -> Any:
        ...

    @abstractmethod
    def forward(self, x: Any) -> Any:
        ...

    def model(self) -> Any:
        if self._model is None:
            with torch_threads(self.threads):
                self._model = self.load()
        return self._model

    def compute(self, items: list[str | Path]) -> np.ndarray:
        import torch

        self.model()
        device = self.device
        out = []
        with torch_threads(self.threads), torch.inference_mode():
            for lo in range(0, len(items), self.batch_size):
                x = self.prepare([read_image(p) for p in items[lo : lo + self.batch_size]])
                # Only the network runs in bfloat16: decoding and normalising stay exact.
                with torch.autocast(
                    torch.device(device).type, torch.bfloat16, self.dtype == "bfloat16"
                ):
                    features = self.forward(x.to(device))
                out.append(features.float().reshape(len(features), -1).cpu().numpy())
        return np.concatenate(out)


class ResizedTorchEmbedder(TorchImageEmbedder):
    """A torch model fed size x size RGB images in [0, 1], normalised by `normalize(x)`."""

    #: Smallest input the model's layers accept (its total stride).
    min_size: int = 1

    def __init__(self, id_parts: Sequence[object], size: int, resample: str, **kwargs: Any) -> None:
        self.size = check_size(size, self.min_size)
        self.resample = check_choice("resample", resample, list(RESAMPLE))
        super().__init__([*id_parts, f"{self.size}px", self.resample], **kwargs)

    def normalize(self, x: Any) -> Any:
        return x

    def prepare(self, images: list[Image.Image]) -> Any:
        import torch

        batch = np.stack([resize_square(img, self.size, self.resample) for img in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
        return self.normalize(x)


def mean_std_normalizer(
    mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any], Any]:
    """x in [0, 1] -> (x - mean) / std per channel (what most ImageNet models expect)."""
    import torch

    m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    return lambda x: (x - m) / s

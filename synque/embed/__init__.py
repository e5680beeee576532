"""Embedders: one protocol, one content-addressed cache, one module per kind of model."""

from synque.embed.base import CachedEmbedder, Embedder, EmbeddingCache, matrix_digest
from synque.embed.image import (
    ImageEmbedder,
    PixelEmbedder,
    TorchImageEmbedder,
    image_key,
    read_image,
)
from synque.embed.image_hf import HFImageEmbedder
from synque.embed.image_models import (
    EfficientNetLite0Embedder,
    InceptionFIDEmbedder,
    LibraryImageEmbedder,
)

__all__ = [
    "CachedEmbedder",
    "EfficientNetLite0Embedder",
    "Embedder",
    "EmbeddingCache",
    "HFImageEmbedder",
    "ImageEmbedder",
    "InceptionFIDEmbedder",
    "LibraryImageEmbedder",
    "PixelEmbedder",
    "TorchImageEmbedder",
    "image_key",
    "matrix_digest",
    "read_image",
]

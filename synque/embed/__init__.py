"""Embedders: one protocol, one content-addressed cache, one module per kind of model."""

from synque.embed.base import CachedEmbedder, Embedder, EmbeddingCache, matrix_digest

__all__ = ["CachedEmbedder", "Embedder", "EmbeddingCache", "matrix_digest"]

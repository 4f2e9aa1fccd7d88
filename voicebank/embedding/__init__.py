"""Speaker-embedding backends behind one surface (see ``base.Embedder``)."""

from __future__ import annotations

from .base import DEFAULT_WINDOW_SECONDS, Embedder, embed_recordings
from .wavlm import DEFAULT_MODEL, XVectorEmbedder, refuse_unusable_directory

__all__ = ["Embedder", "embed_recordings", "load_embedder", "DEFAULT_MODEL", "DEFAULT_WINDOW_SECONDS"]


def load_embedder(source: str | None = None, device: str | None = None) -> Embedder:
    """The embedder for ``source``: ``resemblyzer`` for the GE2E backend, else a hub id or
    directory of a ``*ForXVector`` checkpoint (default microsoft/wavlm-base-plus-sv).
    Nothing is loaded until it is first used; a local directory that is missing, or holds no
    model, is refused now, before torch is imported."""
    if source == "resemblyzer":
        from .resemblyzer import ResemblyzerEmbedder

        return ResemblyzerEmbedder(device=device)
    refuse_unusable_directory(source or DEFAULT_MODEL)
    return XVectorEmbedder(source or DEFAULT_MODEL, device=device)

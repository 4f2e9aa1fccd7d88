"""Speaker-embedding backends behind one surface (see ``base.Embedder``)."""

from __future__ import annotations

from .base import DEFAULT_WINDOW_SECONDS, Embedder, embed_recordings
from .wavlm import DEFAULT_MODEL, XVectorEmbedder

__all__ = ["Embedder", "embed_recordings", "load_embedder", "DEFAULT_MODEL", "DEFAULT_WINDOW_SECONDS"]

# The threshold a new bank starts with, per backend, until it is calibrated on the user's data.
# WavLM: the model card's suggestion for one pair of utterances. Resemblyzer: near the EER threshold
# measured by bench/quality.py (0.798 pooled; LibriSpeech 0.80, VCTK 0.90: calibrate on your data).
DEFAULT_THRESHOLDS = {"xvector": 0.86, "resemblyzer": 0.80}


def load_embedder(source: str | None = None, device: str | None = None) -> Embedder:
    """The embedder for ``source``: ``resemblyzer`` for the GE2E backend, else a hub id or
    directory of a ``*ForXVector`` checkpoint (default microsoft/wavlm-base-plus-sv).
    Nothing is loaded until it is first used."""
    if source == "resemblyzer":
        from .resemblyzer import ResemblyzerEmbedder

        return ResemblyzerEmbedder(device=device)
    return XVectorEmbedder(source or DEFAULT_MODEL, device=device)


# The enrollment checks' cosine thresholds, as offsets from the threshold a bank starts with
# (the model's default, or the one given to `init`): (consistency, duplicate voice).
# - consistency: a recording scored against the voiceprint of the speaker's other recordings is
#   refused below it. Set where at most 1% of genuine speakers enrolling with three recordings are
#   refused; how often a different person's recording slipped into an enrollment is then still
#   caught is measured, not assumed (docs/calibration.md, "Enrollment checks"; bench/quality.py).
# - duplicate voice: the new voiceprint against the nearest enrolled one. Set where the same person
#   enrolled again from other recordings is caught at least 90% of the time.
# Measured with resemblyzer (0.80 - 0.15 = 0.65, 0.80 + 0.08 = 0.88) on speechocean762-dev and
# shared/data/speech by bench/quality.py. WavLM's weights cannot be downloaded where voicebank is
# developed: the same offsets from the model card's 0.86 are a starting point only, and
# `voicebank checks` sets a bank's own.
CHECK_OFFSETS = (-0.15, 0.08)
# Under the margin rule (2 x best - second best) a new bank's identification threshold starts this
# much above its verification one: measured with resemblyzer, the default 0.80 + 0.08 lets in as
# few or fewer never-enrolled people than the best score at 0.80 (LibriSpeech/VCTK set: 4.0% and
# 4.0%; speechocean762-dev, 50 enrolled: 6.8% and 16%). Still only a start: calibrate.
MARGIN_OFFSET = 0.08


def default_threshold(embedder: Embedder) -> float:
    return DEFAULT_THRESHOLDS.get(getattr(embedder, "kind", "xvector"), 0.86)


def enrollment_checks(start: float) -> tuple[float, float]:
    """The (consistency, duplicate voice) cosine thresholds of a bank that starts at ``start``."""
    return max(start + CHECK_OFFSETS[0], -1.0), min(start + CHECK_OFFSETS[1], 1.0)

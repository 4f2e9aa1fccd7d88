"""The numbers a bank's decisions start from, and the rules that derive its starting thresholds.

A new bank takes its verification threshold from its model (or from ``init --threshold``), its
identification threshold and its enrollment checks from that one, and an AS-norm bank its own start.
They are only a start: ``calibrate`` measures a bank's own, and a bank with a reference set is
measured on it when it is made (``evaluation.reference_points``). Plain Python: nothing here
loads a model, a database or an index.
"""

from __future__ import annotations

from .impostors import MARGIN
from .norm import ASNORM, COSINE

# The threshold a new bank starts with, per backend, until it is calibrated on the user's data.
# WavLM: the model card's suggestion for one pair of utterances. Resemblyzer: near its equal-error
# threshold on read speech (`python bench/quality.py`, "Verification"); calibrate on your data.
DEFAULT_THRESHOLDS = {"xvector": 0.86, "resemblyzer": 0.80}

# The enrollment checks' cosine thresholds, as offsets from the threshold a bank starts with
# (the model's default, or the one given to `init`): (consistency, duplicate voice).
# - consistency: a recording scored against the voiceprint of the speaker's other recordings is
#   refused below it. Set where at most 1% of genuine speakers enrolling with three recordings are
#   refused; how often a different person's recording slipped into an enrollment is then still
#   caught is measured, not assumed (docs/calibration.md, "Enrollment checks"; bench/quality.py).
# - duplicate voice: the new voiceprint against the nearest enrolled one. Set where the same person
#   enrolled again from other recordings is caught at least 90% of the time.
# Set with resemblyzer on the hardest corpus at hand and checked on the others
# (`python bench/quality.py`, "Enrollment gates chosen on one corpus"). For WavLM, whose weights
# could not be downloaded here, the same offsets are a starting point only; `voicebank checks`
# sets a bank's own.
CHECK_OFFSETS = (-0.15, 0.08)

# Under the margin rule (2 x best - second best) a new bank's identification threshold starts this
# much above its verification one, so that it lets in no more never-enrolled people than the best
# score at the verification threshold would (`python bench/quality.py`, "Open-set identification").
# Still only a start: calibrate.
MARGIN_OFFSET = 0.08

# Where a freshly switched AS-norm bank starts, in standard deviations, until it is calibrated:
# near the EER threshold measured with small cohorts (bench/quality.py); calibrate on your data.
DEFAULT_ASNORM_THRESHOLD = 3.0


def default_threshold(embedder: object) -> float:
    """The cosine verification threshold a bank of ``embedder`` (an ``Embedder``; its ``kind``,
    ``xvector`` when it names none) starts with."""
    return DEFAULT_THRESHOLDS.get(getattr(embedder, "kind", "xvector"), DEFAULT_THRESHOLDS["xvector"])


def score_start(score: str, cosine_default: float) -> float:
    """The verification threshold a bank starts with on ``score``: ``cosine_default`` (its model's,
    :func:`default_threshold`) on cosine, :data:`DEFAULT_ASNORM_THRESHOLD` on AS-norm."""
    return DEFAULT_ASNORM_THRESHOLD if score == ASNORM else cosine_default


def identify_start(verify: float, rule: str, score: str = COSINE) -> float:
    """The identification threshold a bank whose verification threshold is ``verify`` starts with:
    :data:`MARGIN_OFFSET` above it under the margin rule on cosine, the same under any other."""
    return verify + MARGIN_OFFSET if rule == MARGIN and score == COSINE else verify


def enrollment_checks(start: float) -> tuple[float, float]:
    """The (consistency, duplicate voice) cosine thresholds of a bank that starts at ``start``."""
    return max(start + CHECK_OFFSETS[0], -1.0), min(start + CHECK_OFFSETS[1], 1.0)

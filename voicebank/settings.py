"""The bank's settings: its two operating points, the enrollment checks, the score, the index kind.

Each function reads or edits the one settings row through what it is given (:class:`Rows`,
which ``store.repository.Repository`` provides); the rules about what a value means live here.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager
from typing import Protocol

from . import norm, policy, validate
from .calibration import IDENTIFY, SCAN, VERIFY, OperatingPoint
from .channel import CHANNELS, TELEPHONE, WIDEBAND
from .errors import InvalidInputError, VoiceBankError
from .store import BankRow, Store

log = logging.getLogger(__name__)

COLUMN = {(VERIFY, WIDEBAND): "threshold", (IDENTIFY, WIDEBAND): "identify_threshold",
          (VERIFY, TELEPHONE): "telephone_threshold", (IDENTIFY, TELEPHONE): "telephone_identify_threshold"}
_POINTS: dict[str, dict[str, OperatingPoint]] = {}  # parsed operating JSON, by its text


class Rows(Protocol):
    store: Store

    def settings(self) -> BankRow: ...
    def editing_settings(self) -> AbstractContextManager[BankRow]: ...


def operating_points(settings: BankRow, channel: str = WIDEBAND) -> dict[str, OperatingPoint]:
    """The stored operating points of ``channel``; a threshold with no stored meaning (a new bank's
    default, or one carried over by a migration) is described as ``default``. A telephone threshold
    never set is the wideband one, as a default. ``scan`` (the threshold of `scan`'s short windows)
    is there only when it was measured: without it, scan decides with ``identify``'s."""
    validate.channel(channel)
    key = json.dumps([channel, *(getattr(settings, c) for c in COLUMN.values()), settings.identify_rule,
                      settings.score, _fingerprint(settings.operating)], sort_keys=True)
    found = _POINTS.get(key)  # one lookup: another thread may clear the cache between two
    if found is None:
        stored = settings.operating or {}
        points = {}
        for which in (VERIFY, IDENTIFY):
            value = getattr(settings, COLUMN[which, channel])
            if value is None:
                value = getattr(settings, COLUMN[which, WIDEBAND])
            point = OperatingPoint.from_dict(stored[stored_key(which, channel)]) \
                if stored_key(which, channel) in stored else None
            rule = settings.identify_rule if which == IDENTIFY else None
            if point is None or point.threshold != value or point.kind != settings.score or point.rule != rule:
                point = OperatingPoint(which, value, settings.score, "default", None, None, rule=rule, channel=channel)
            points[which] = point
        scan = stored.get(stored_key(SCAN, channel))
        if scan is not None:  # measured on strangers' scan windows; kept only while it means the same
            point = OperatingPoint.from_dict(scan)
            if point.kind == settings.score and point.rule == settings.identify_rule:
                points[SCAN] = point
        if len(_POINTS) > 64:
            _POINTS.clear()
        _POINTS[key] = found = points
    return found


def _fingerprint(operating: dict | None) -> list:
    """What tells stored operating points apart, without serializing their models on every decision."""
    fields = ("purpose", "threshold", "kind", "method", "target", "rate", "counted", "trials", "gallery", "rule", "upper",
              "lengths")
    return sorted([k, *(p.get(f) for f in fields)] for k, p in (operating or {}).items())


def stored_key(purpose: str, channel: str) -> str:
    """Where an operating point is kept in ``BankRow.operating``: ``verify``, ``identify``,
    ``telephone:verify``, ``telephone:identify``."""
    return purpose if channel == WIDEBAND else f"{channel}:{purpose}"


def set_threshold(rows: Rows, value: float, purpose: str | None = None, channel: str | None = WIDEBAND) -> None:
    """Set a threshold by hand: ``purpose`` ``"verify"``, ``"identify"``, ``"scan"`` (scan's
    windows), or None for verify and identify; in ``channel`` (None: every channel)."""
    if purpose not in (None, VERIFY, IDENTIFY, SCAN):
        raise InvalidInputError(f"a threshold is for verify, identify or scan (or verify and identify), not {purpose!r}.")
    if channel not in (None, *CHANNELS):
        raise InvalidInputError(f"a channel is {' or '.join(CHANNELS)}, not {channel!r}.")
    with rows.editing_settings() as bank:
        points = dict(bank.operating or {})
        for where in CHANNELS if channel is None else (channel,):
            for which in (VERIFY, IDENTIFY) if purpose is None else (purpose,):
                rule = bank.identify_rule if which != VERIFY else None
                value = validate.threshold(value, bank.score, rule)
                if which != SCAN:
                    setattr(bank, COLUMN[which, where], value)
                points[stored_key(which, where)] = OperatingPoint(which, value, bank.score, "manual", None, None,
                                                                  rule=rule, channel=where).to_dict()
        bank.operating = points
    log.info("%s threshold set to %.4f (%s)", purpose or "verify and identify", value, channel or "every channel")


def set_operating_point(rows: Rows, point: OperatingPoint) -> None:
    """Store a calibrated threshold with what it means (and, for identification, its rule)."""
    with rows.editing_settings() as bank:
        _store_point(bank, point)
    log.info("%s threshold (%s) set to %.4f by calibration", point.purpose, point.channel, point.threshold)


def set_automatic_point(rows: Rows, point: OperatingPoint) -> bool:
    """Store an automatically measured point (method ``auto``), provided the point it replaces is
    still automatic, on the same score and rule, when the write lock is taken: one set meanwhile by
    hand or by ``calibrate`` is kept. Returns whether it was stored."""
    with rows.editing_settings() as bank:
        stored = (bank.operating or {}).get(stored_key(point.purpose, point.channel))
        now = OperatingPoint.from_dict(stored) if stored else None
        still = now.method == "auto" if now is not None else point.purpose == SCAN
        if not still or bank.score != point.kind or (point.purpose != VERIFY and bank.identify_rule != point.rule):
            return False
        _store_point(bank, point)
    log.info("%s threshold (%s) measured again: %.4f", point.purpose, point.channel, point.threshold)
    return True


def _store_point(bank: BankRow, point: OperatingPoint) -> None:
    if point.kind != bank.score:
        raise VoiceBankError(f"that threshold is on the {point.kind} score, but the bank now scores by "
                             f"{bank.score}; calibrate again.")
    value = validate.threshold(point.threshold, bank.score, point.rule)
    points = dict(bank.operating or {})
    if point.purpose != SCAN:  # scan's threshold lives in the stored point alone
        setattr(bank, COLUMN[point.purpose, point.channel], value)
    if point.purpose == IDENTIFY and point.rule and point.rule != bank.identify_rule:
        # the other channel's identification points were set for the old rule: they mean nothing now
        bank.identify_rule = point.rule
        other = TELEPHONE if point.channel == WIDEBAND else WIDEBAND
        for which in (IDENTIFY, SCAN):
            points.pop(stored_key(which, other), None)
        if other == TELEPHONE:
            bank.telephone_identify_threshold = None
        else:
            bank.identify_threshold = value
    points[stored_key(point.purpose, point.channel)] = point.to_dict()
    bank.operating = points


def checks(settings: BankRow, default: float) -> tuple[float, float]:
    """The (consistency, duplicate voice) cosine thresholds of the enrollment checks; a bank from
    before they were stored uses the offsets from ``default``, its model's starting threshold."""
    consistency, duplicate = policy.enrollment_checks(default)
    return (consistency if settings.consistency_threshold is None else settings.consistency_threshold,
            duplicate if settings.duplicate_threshold is None else settings.duplicate_threshold)


def set_checks(rows: Rows, consistency: float | None, duplicate: float | None, reset: bool) -> None:
    """Set the enrollment checks' thresholds (None keeps one; ``reset`` goes back to the defaults)."""
    with rows.editing_settings() as bank:
        if reset:
            bank.consistency_threshold = bank.duplicate_threshold = None
        if consistency is not None:
            bank.consistency_threshold = validate.threshold(consistency)
        if duplicate is not None:
            bank.duplicate_threshold = validate.threshold(duplicate)


def set_score(rows: Rows, kind: str, top_n: int, threshold: float | None, cosine_default: float) -> float:
    """Switch the score to ``cosine`` or ``asnorm`` (top-``top_n`` cohort); both thresholds are
    replaced by ``threshold`` or that score's starting default (``cosine_default`` for cosine).
    Returns the new verification threshold."""
    if kind not in norm.KINDS:
        raise InvalidInputError(f"the score is one of {', '.join(norm.KINDS)}, not {kind!r}.")
    if not isinstance(top_n, int) or not norm.MIN_COHORT <= top_n <= 10_000:
        raise InvalidInputError(
            f"the AS-norm cohort top-N is a whole number from {norm.MIN_COHORT} to 10000, not {top_n!r}.")
    with rows.editing_settings() as bank:
        default = policy.score_start(kind, cosine_default)
        bank.score, bank.cohort_top_n = kind, top_n
        bank.threshold = validate.threshold(default if threshold is None else threshold, kind)
        bank.identify_threshold = validate.threshold(policy.identify_start(bank.threshold, bank.identify_rule, kind),
                                                     kind, bank.identify_rule)
        bank.telephone_threshold = bank.telephone_identify_threshold = None
        bank.operating = None
        return bank.threshold


def set_index_kind(rows: Rows, kind: str, dimension: int, where: str) -> None:
    """Switch the bank to index ``kind``. On PostgreSQL the pgvector column, trigger and index are
    made or dropped in the transaction that changes the kind (``where``: the database, for messages)."""
    from .index import factory

    kind = validate.index_kind(kind)
    factory.refuse_unless_usable(rows.store, kind, where)
    with rows.editing_settings() as bank:
        factory.switch_kind(bank, kind, dimension)
        bank.index_kind = kind

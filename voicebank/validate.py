"""Limits on names and metadata, so hostile input is refused with a clear message."""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

from .errors import InvalidInputError

MAX_NAME_CHARS = 200
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8


def name(value: Any) -> str:
    """A speaker name: 1 to 200 characters after trimming, NFC-normalized, with no control or
    invisible formatting characters (except the joiners that some scripts and emoji need)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"a speaker name must be text, not {type(value).__name__}.")
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise InvalidInputError("a speaker name must not be empty.")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidInputError(f"a speaker name is at most {MAX_NAME_CHARS} characters; this one has {len(value)}.")
    if any(unicodedata.category(ch) in ("Cc", "Cs") or (unicodedata.category(ch) == "Cf" and not _joins(value, i))
           for i, ch in enumerate(value)):
        raise InvalidInputError("a speaker name must not contain control or invisible formatting characters.")
    return value


_JOINERS = ("\u200c", "\u200d")  # zero-width non-joiner and joiner
_VISIBLE = ("L", "M", "N", "S")  # letters, marks, digits, symbols (emoji among them)


def _joins(value: str, i: int) -> bool:
    """Whether ``value[i]`` is a zero-width (non-)joiner doing its job: Persian and Indic spelling
    and emoji sequences need them (``می‌خواهم``, ``क्‍ष``, 👩‍💻). Allowed only between two visible
    characters, at least one of them not ASCII, so that ``al<ZWJ>ice`` cannot pass for ``alice``.
    Every other invisible formatting character (bidi overrides, zero-width space, ...) is refused."""
    if value[i] not in _JOINERS or i == 0 or i == len(value) - 1:
        return False
    before, after = value[i - 1], value[i + 1]
    if not all(unicodedata.category(c)[0] in _VISIBLE for c in (before, after)):
        return False
    return not (before.isascii() and after.isascii())


def metadata(value: Any) -> dict[str, Any]:
    """Speaker metadata: a JSON object of at most 16 KiB, nested at most 8 deep, finite numbers only."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"metadata must be a mapping of names to values, not {type(value).__name__}.")
    _check_depth(value, 1)
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
        size = len(encoded.encode())
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"metadata text must be valid Unicode: {exc.object[exc.start:exc.end]!r} is a lone surrogate "
                                "(bytes that were not UTF-8?).") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata must be plain JSON (text, numbers, booleans, lists, objects): {exc}.") from exc
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is at most {MAX_METADATA_BYTES // 1024} KiB as JSON; this is {size} bytes.")
    return json.loads(encoded)


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInputError(f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep.")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"metadata keys must be text, not {type(key).__name__}.")
            _check_depth(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_depth(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError("metadata numbers must be finite (no NaN or infinity).")


def threshold(value: Any, score: str = "cosine") -> float:
    """A threshold for the bank's score: a cosine in [-1, 1], or AS-norm standard deviations in [-100, 100]."""
    low, high = (-1.0, 1.0) if score == "cosine" else (-100.0, 100.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"a threshold is a number between {low:g} and {high:g}, not {value!r}.") from None
    if not low <= value <= high:
        raise InvalidInputError(f"a threshold on the {score} score is between {low:g} and {high:g}, not {value}.")
    return value


def top_k(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise InvalidInputError(f"top-k is a whole number from 1 to 1000, not {value!r}.")
    return value


def index_kind(value: Any) -> str:
    from .index import KINDS

    if value not in KINDS:
        raise InvalidInputError(f"the index kind is one of {', '.join(KINDS)}, not {value!r}.")
    return value

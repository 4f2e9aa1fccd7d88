"""Limits on names and metadata, so hostile input is refused with a clear message."""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

from .confusable import ignorable, skeleton
from .errors import InvalidInputError

MAX_NAME_CHARS = 200
# A name is also stored in its look-alike form (confusable.skeleton), which spells compatibility
# characters out (U+FDFA is 18 letters): the column holds 1024 characters, and PostgreSQL's index
# on it takes entries of at most 2704 bytes once compressed (how well a name compresses is not
# something to count on: 2048 leaves room). SQLite takes any length; both refuse the same names.
MAX_SKELETON_CHARS, MAX_SKELETON_BYTES = 1024, 2048
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
    if unicodedata.category(value[0]).startswith("M"):  # nothing to sit on: it renders as nothing, or on what precedes
        raise InvalidInputError("a speaker name must not start with a combining mark (an accent with no letter under it).")
    if any(unicodedata.category(ch) in ("Cc", "Cs") or (unicodedata.category(ch) == "Cf" and not _joins(value, i))
           for i, ch in enumerate(value)):
        raise InvalidInputError("a speaker name must not contain control or invisible formatting characters.")
    shape = skeleton(value)
    if len(shape) > MAX_SKELETON_CHARS or len(shape.encode()) > MAX_SKELETON_BYTES:
        raise InvalidInputError(
            f"a speaker name is also stored in its look-alike form, which spells out compatibility characters "
            f"(\ufdfa is 18 letters); that form may be at most {MAX_SKELETON_CHARS} characters and {MAX_SKELETON_BYTES} "
            f"bytes, and this name's is {len(shape)} characters ({len(shape.encode())} bytes): give a shorter name.")
    return value


def new_name(value: Any) -> str:
    """A name for a speaker about to be enrolled: :func:`name`, and also nothing that renders as
    nothing (Unicode's default-ignorable code points: a Hangul filler, a combining grapheme joiner,
    a variation selector outside an emoji) except the joiners :func:`name` accepts, and at least one
    character that shows. Names already enrolled stay addressable by :func:`name` alone."""
    value = name(value)
    for i, ch in enumerate(value):
        if ignorable(ch) and not _joins(value, i) and not (ch in (VS15, VS16) and i and _emoji(value[i - 1])):
            raise InvalidInputError(f"a speaker name must not contain characters that show as nothing (U+{ord(ch):04X} "
                                    "here): another name could look the same. Leave it out.")
    if not any(unicodedata.category(ch)[0] in "LNPS" and ch not in DRAWN_BLANK for ch in value):
        raise InvalidInputError("a speaker name must hold at least one letter, digit or symbol that shows: this one "
                                "looks blank.")
    for ch in value:
        why = _unclear(ch)
        if why:
            label = unicodedata.name(ch, "") or ("private use" if unicodedata.category(ch) == "Co" else
                                                 "a noncharacter" if _noncharacter(ch) else "unassigned")
            todo = "Use a plain space." if why.startswith("it shows as a blank") else "Leave it out."
            raise InvalidInputError(f"a speaker name must not contain U+{ord(ch):04X} ({label}): {why}, so another "
                                    f"name could look the same. {todo}")
    return value


def _unclear(ch: str) -> str:
    """Why ``ch`` may show as something else, or as nothing, in a new name; "" when it shows as itself."""
    category = unicodedata.category(ch)
    if ch in DRAWN_BLANK or (category[0] == "Z" and ch != " "):  # thin, hair, no-break, line separator...
        return "it shows as a blank other than the plain space"
    if category == "Co":
        return "it is a private-use character, which each font draws its own way or not at all"
    if category == "Cn":  # the noncharacters (U+FDD0-FDEF, U+xFFFE, U+xFFFF) are Cn too
        return "it is not an assigned character, which fonts draw as nothing or as a box"
    if ch == OBJECT_REPLACEMENT:
        return "it stands for an embedded object and shows as nothing or as a box"
    return ""


def _noncharacter(ch: str) -> bool:
    return 0xFDD0 <= ord(ch) <= 0xFDEF or ord(ch) & 0xFFFE == 0xFFFE


ZWNJ, ZWJ, VS16, BLACK_FLAG, CANCEL_TAG = "\u200c", "\u200d", "\ufe0f", "\U0001f3f4", "\U000e007f"
VS15, BRAILLE_BLANK = "\ufe0e", "\u2800"  # text presentation of an emoji; a Braille cell with no dots
# Letters and symbols whose glyph is empty by design: a Braille cell with no dots, a musical null
# notehead, the Khitan filler (Hangul's fillers are default-ignorable, refused as such).
DRAWN_BLANK = frozenset((BRAILLE_BLANK, "\U0001d159", "\U00016fe4"))
OBJECT_REPLACEMENT = "\ufffc"
# Scripts whose letters join (cursive shaping), where a ZWNJ between two letters changes how the
# word looks: Arabic (with its supplements and presentation forms), Syriac, N'Ko, Mongolian.
_JOINING = ((0x0600, 0x06FF), (0x0700, 0x074F), (0x0750, 0x077F), (0x07C0, 0x07FF), (0x0860, 0x08FF),
            (0x1800, 0x18AF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))


def _joins(value: str, i: int) -> bool:
    """Whether the invisible ``value[i]`` does a visible job, as scripts and emoji need it:
    a ZWNJ between two letters of a joining script (Persian ``می‌خواهم``), a ZWJ or ZWNJ after a
    virama (Indic conjuncts, ``क्‍ष``), a ZWJ between emoji (👩‍💻), or an emoji flag's tag
    characters. In each of these the joiner changes how the name looks, so it cannot hide a
    look-alike of another name; anywhere else (``Jos<ZWJ>é``, ``al<ZWJ>ice``) it could, and is
    refused, as is every other invisible formatting character (bidi overrides, zero-width space)."""
    ch = value[i]
    before = value[i - 1] if i > 0 else ""
    after = value[i + 1] if i + 1 < len(value) else ""
    if 0xE0020 <= ord(ch) <= 0xE007F:  # tag characters: only in a flag, 🏴 + tags + cancel tag
        start = i
        while start > 0 and 0xE0020 <= ord(value[start - 1]) <= 0xE007E:
            start -= 1
        end = value.find(CANCEL_TAG, i)
        return start > 0 and value[start - 1] == BLACK_FLAG and end != -1 and all(
            0xE0020 <= ord(c) <= 0xE007E for c in value[start:end])
    if ch not in (ZWNJ, ZWJ) or not before or not after:
        return False
    if unicodedata.combining(before) == 9:  # a virama
        return unicodedata.category(after).startswith("L")
    if ch == ZWNJ:
        return _joining_letter(before) and _joining_letter(after)
    return _emoji(before) and _emoji(after)


def _joining_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L") and any(lo <= ord(ch) <= hi for lo, hi in _JOINING)


def _emoji(ch: str) -> bool:
    """Pictographs, and what may end one inside a ZWJ sequence: VS16 and the skin-tone modifiers."""
    return ch == VS16 or 0x1F3FB <= ord(ch) <= 0x1F3FF or (unicodedata.category(ch) == "So" and ord(ch) >= 0x2190)


def printable(text: str, keep: str = "", json: bool = False) -> str:
    """``text`` safe to show on a terminal: control characters (C0, C1), invisible formatting
    characters (bidi overrides, zero-width ones) and line or paragraph separators written as
    visible escapes (``\\x1b``, ``\\u202e``), except those in ``keep`` (e.g. newline and tab for
    multi-line output). Joiners inside a name that :func:`name` accepts stay as they are. With
    ``json``, the escapes are JSON's own (``\\u001b``, surrogate pairs), so JSON text stays valid."""
    out = []
    for i, ch in enumerate(text):
        if ch in keep or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Cs") or (
                unicodedata.category(ch) == "Cf" and _joins(text, i)):
            out.append(ch)
            continue
        code = ord(ch)
        if json:
            units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)]
            out.append("".join(f"\\u{unit:04x}" for unit in units))
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


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


def threshold(value: Any, score: str = "cosine", rule: str | None = None) -> float:
    """A threshold for the bank's score: a cosine in [-1, 1], or AS-norm standard deviations in
    [-100, 100]; under the identification margin rule (2 x best - second best) three times as wide."""
    low, high = (-1.0, 1.0) if score == "cosine" else (-100.0, 100.0)
    if rule == "margin":
        low, high = 3 * low, 3 * high
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"a threshold is a number between {low:g} and {high:g}, not {value!r}.") from None
    if not low <= value <= high:
        raise InvalidInputError(f"a threshold on the {score} score is between {low:g} and {high:g}, not {value}.")
    return value


def channel(value: Any) -> str:
    """A channel: ``wideband`` or ``telephone`` (voicebank.channel)."""
    if value not in ("wideband", "telephone"):
        raise InvalidInputError(f"a channel is wideband or telephone, not {value!r}.")
    return value


def identify_rule(value: Any) -> str:
    """What identification decides on: ``margin`` or ``best`` (voicebank.calibration.decide)."""
    if value not in ("margin", "best"):
        raise InvalidInputError(f"the identification rule is margin or best, not {value!r}.")
    return value


def top_k(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise InvalidInputError(f"top-k is a whole number from 1 to 1000, not {value!r}.")
    return value


def index_kind(value: Any) -> str:
    from .index import BANK_KINDS

    if value not in BANK_KINDS:
        raise InvalidInputError(f"the index kind is one of {', '.join(BANK_KINDS)}, not {value!r}.")
    return value

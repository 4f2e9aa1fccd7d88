"""Look-alike names: a skeleton in the manner of Unicode UTS #39, from the Unicode confusables
data that the ``confusable-homoglyphs`` package ships (no hand-made table).

Two names with the same skeleton can be mistaken for each other on screen (``аlice`` with a
Cyrillic а, and ``alice``; ``l`` and ``I``; ``0`` and ``O``; ``m`` and ``rn``), so a bank refuses
the second. Characters that render as nothing (Unicode's Default_Ignorable_Code_Point) are left out
of the skeleton, as UTS #39 does.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from importlib import resources


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15.1): code points a
# renderer shows as nothing when it has no glyph for them. Checked against the file by
# tests/test_hostile.py where Python's unicodedata version matches.
DEFAULT_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                     (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                     (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))


def ignorable(ch: str) -> bool:
    """Is ``ch`` a Default_Ignorable_Code_Point (shown as nothing)?"""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in DEFAULT_IGNORABLE)


def skeleton(name: str) -> str:
    """``name`` with each character replaced by its look-alike prototype (a character, or a
    sequence: ``m`` is ``rn``), folded (NFKC) and decomposed (NFD), without the characters that
    render as nothing, repeated until nothing changes. Case is kept (UTS #39 keeps it too).

    The mapping comes before NFKC: NFKC turns some look-alikes into letters that look like nothing
    in particular (``ϲ`` into ``ς``, not ``c``; ``ſ`` into ``s``, not ``f``). NFKC still reaches the
    compatibility forms the data leaves out (fullwidth ``ｂ``, ligatures), and the repetition maps
    what it and the spelled-out sequences produce (``ǁ`` is ``ll``, whose ``l`` is ``1``)."""
    shape = name
    for _ in range(_MAX_ROUNDS):
        mapped = _round(shape)
        if mapped == shape:
            break
        shape = mapped
    return shape


# every pair in the data is at its fixpoint within 3 rounds (tests/test_hostile.py checks every pair)
_MAX_ROUNDS = 8


def _round(text: str) -> str:
    table, spelled = _representatives(), _sequences()
    reps = (table.get(ch, ch) for ch in unicodedata.normalize("NFD", text) if not ignorable(ch))
    mapped = "".join(spelled.get(rep, rep) for rep in reps)
    return unicodedata.normalize("NFD", unicodedata.normalize("NFKC", mapped))


@functools.lru_cache(maxsize=1)
def pairs() -> list[tuple[str, str]]:
    """The confusables data as (text, look-alike) pairs, without what renders as nothing: the data
    wraps right-to-left characters in direction marks (``l`` ~ LRM ``׀`` LRM), which would
    otherwise make a one-character pair look like a sequence."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    return [(_shown(text), _shown(entry["c"])) for text, entries in data.items() for entry in entries]


def _shown(text: str) -> str:
    return "".join(ch for ch in text if not ignorable(ch))


@functools.lru_cache(maxsize=1)
def _representatives() -> dict[str, str]:
    """{character: the lowest code point among everything confusable with it}, closing the
    data's one-character pairs under "is confusable with" (union-find)."""
    parent: dict[str, str] = {}

    def root(ch: str) -> str:
        while parent.get(ch, ch) != ch:
            parent[ch] = parent.get(parent[ch], parent[ch])
            ch = parent[ch]
        return ch

    for one, other in pairs():
        if len(one) == 1 and len(other) == 1:
            a, b = root(one), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {ch: root(ch) for ch in list(parent)}


@functools.lru_cache(maxsize=1)
def _sequences() -> dict[str, str]:
    """{representative character: the sequence it looks like} for the data's one-to-many pairs
    (``m`` and ``rn``, ``ǁ`` and ``ll``); of several, the first in code-point order. The sequence's
    own characters are mapped by the next round of :func:`skeleton`."""
    table: dict[str, str] = {}
    for one, other in sorted(pairs()):
        if len(one) == 1 and len(other) > 1:
            table.setdefault(_representatives().get(one, one), other)
    return table

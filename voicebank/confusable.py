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
    """``name`` folded (NFKC) and decomposed (NFD), without the characters that render as nothing,
    each character replaced by its look-alike prototype (a character, or a sequence: ``m`` is
    ``rn``), and decomposed again. Case is kept (UTS #39 keeps it too)."""
    table, spelled = _representatives(), _sequences()
    # NFKC first: compatibility forms (fullwidth ｂ, ligatures, circled letters) are their plain letters
    chars = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", name))
    mapped = "".join(spelled.get(rep, rep) for rep in (table.get(ch, ch) for ch in chars if not ignorable(ch)))
    return unicodedata.normalize("NFD", mapped)


@functools.lru_cache(maxsize=1)
def _representatives() -> dict[str, str]:
    """{character: the lowest code point among everything confusable with it}, closing the
    package's one-character pairs under "is confusable with" (union-find)."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    parent: dict[str, str] = {}

    def root(ch: str) -> str:
        while parent.get(ch, ch) != ch:
            parent[ch] = parent.get(parent[ch], parent[ch])
            ch = parent[ch]
        return ch

    for ch, entries in data.items():
        for entry in entries:
            other = entry["c"]
            if len(ch) == 1 and len(other) == 1:
                a, b = root(ch), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {ch: root(ch) for ch in list(parent)}


@functools.lru_cache(maxsize=1)
def _sequences() -> dict[str, str]:
    """{representative character: the sequence it looks like} for the data's one-to-many pairs
    (``m`` and ``rn``, ``ﬀ`` and ``ff`` before NFKC reaches it), each character of the sequence
    by its own representative; of several, the first in code-point order."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table, out = _representatives(), {}
    for ch in sorted(data):
        if len(ch) != 1:
            continue
        for entry in sorted(data[ch], key=lambda e: e["c"]):
            other = entry["c"]
            if len(other) > 1:
                out.setdefault(table.get(ch, ch), "".join(table.get(c, c) for c in other if not ignorable(c)))
    return out

"""Look-alike names: a skeleton in the manner of Unicode UTS #39, from the Unicode confusables
data that the ``confusable-homoglyphs`` package ships (no hand-made table).

Two names with the same skeleton can be mistaken for each other on screen (``аlice`` with a
Cyrillic а, and ``alice``; ``l`` and ``I``; ``0`` and ``O``), so a bank refuses the second.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from importlib import resources


def skeleton(name: str) -> str:
    """``name`` folded (NFKC) and decomposed (NFD), each character replaced by the representative
    of its class of look-alikes, and decomposed again. Case is kept (UTS #39 keeps it too)."""
    table = _representatives()
    # NFKC first: compatibility forms (fullwidth ｂ, ligatures, circled letters) are their plain letters
    mapped = "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", unicodedata.normalize("NFKC", name)))
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

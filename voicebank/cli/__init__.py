"""The ``voicebank`` command: a thin click layer over :class:`voicebank.VoiceBank`.

Every command parses its arguments, makes one facade call and prints. Library errors become a
one-line ``Error: ...`` and exit code 2; ``verify`` exits 1 when it rejects and ``identify`` when
it finds no match. Heavy modules are imported inside commands so ``voicebank --help`` is instant.
"""

from . import admin, listen, quality, scan, serve, speakers  # noqa: F401  (each registers its commands on `main`)
from .base import main

__all__ = ["main"]

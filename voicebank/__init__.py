"""voicebank: enroll speakers, then identify (1:N) and verify (1:1) them from recordings.

    from voicebank import VoiceBank
    with VoiceBank.open("voicebank.db") as bank:
        bank.enroll("alice", ["a1.wav", "a2.flac"])
        print(bank.identify("unknown.wav").match)

Importing voicebank is cheap: torch, transformers, FAISS and SQLAlchemy load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import VoiceBankError

__all__ = ["VoiceBank", "VoiceBankError", "Identification", "Verification", "Speaker"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .bank import VoiceBank
    from .results import Identification, Speaker, Verification


def __getattr__(name: str) -> Any:
    if name == "VoiceBank":
        from .bank import VoiceBank

        return VoiceBank
    if name in ("Identification", "Verification", "Speaker"):
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module 'voicebank' has no attribute {name!r}")

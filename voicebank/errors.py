"""The errors voicebank raises. Every message says what happened and what to do next."""

from __future__ import annotations


class VoiceBankError(Exception):
    """Base class of every error voicebank raises on purpose."""


class AudioError(VoiceBankError):
    """A recording could not be used: unreadable, empty, corrupt, silent, too short or too long."""


class NotEnoughSpeechError(AudioError):
    """A recording holds less detected speech than the configured minimum."""


class NarrowbandError(AudioError):
    """A recording's speech does not reach the lowest bandwidth voices can be told apart on."""


class ModelError(VoiceBankError):
    """The speaker model could not be loaded."""


class ModelMismatchError(VoiceBankError):
    """The bank was created with another speaker model than the one given."""


class SpeakerNotFoundError(VoiceBankError):
    """No speaker of that name is enrolled."""


class DuplicateSpeakerError(VoiceBankError):
    """A speaker of that name is already enrolled."""


class DuplicateRecordingError(VoiceBankError):
    """The same recording was given twice for one speaker."""


class InconsistentRecordingError(VoiceBankError):
    """An enrollment recording does not sound like the speaker's other recordings."""


class DuplicateVoiceError(VoiceBankError):
    """A new voiceprint matches another enrolled speaker (refused in strict mode)."""


class EmptyBankError(VoiceBankError):
    """Identification was asked of a bank with no speakers."""


class BankNotFoundError(VoiceBankError):
    """The database holds no voicebank yet."""


class SchemaError(VoiceBankError):
    """The database schema is older or newer than this voicebank."""


class InvalidInputError(VoiceBankError):
    """An argument is out of its documented range (names, metadata, thresholds, top-k)."""


class NotEnoughDataError(VoiceBankError):
    """Calibration data too thin for the asked target; the message says how much more is needed."""


class DatabaseGoneError(VoiceBankError):
    """The SQLite file was deleted or replaced while the process had it open; nothing was written."""


class DatabaseError(VoiceBankError):
    """The database cannot be opened or written: not a database, read-only, unreachable, full."""


class ReplicaError(VoiceBankError):
    """A change was asked of a process that reads a PostgreSQL read replica (``--primary`` given).

    Such a process sends its audit rows to the primary but changes nothing else: a process that
    wrote a change through the primary and then read its replica would not see its own change
    until the replica replays it, and its FAISS index, caught up from the replica's change log,
    would disagree with what it had just written. Changes go through a process whose ``--db`` is
    the primary."""


class StaleReplicaError(VoiceBankError):
    """A process that reads a read replica could not decide on what the primary had acknowledged:
    the replica had not replayed it within ``max_lag`` seconds (``--max-lag``), or replays nothing.

    Nothing was decided: a person removed on the primary could still be let in by a replica that
    has not replayed the removal. Retry, or ask a server on a replica that keeps up."""

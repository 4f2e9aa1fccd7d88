"""The SQL tables: SQLAlchemy 2.0 models (the schema itself is made only by the Alembic migrations)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

DEFAULT_DB = "voicebank.db"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime. SQLite hands back naive ones; voicebank always writes UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class Vector(TypeDecorator):
    """A float32 vector (an embedding or a voiceprint), stored as its raw bytes in a binary column.

    The one place the codec lives: Python sees a read-only (dimension,) float32 array, the
    database the same bytes as before this type existed (no migration). Bytes are accepted on
    the way in too, as written by older code."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        return np.ascontiguousarray(value, dtype=np.float32).tobytes()

    def process_result_value(self, value: Any, dialect: Any) -> np.ndarray | None:
        return None if value is None else np.frombuffer(bytes(value), dtype=np.float32)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class BankRow(Base):
    """The bank's settings: one row, id 1."""

    __tablename__ = "bank"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36))
    model_source: Mapped[str] = mapped_column(String(1024))
    model_id: Mapped[str] = mapped_column(String(255))
    dimension: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float] = mapped_column(Float)  # verification (1:1)
    identify_threshold: Mapped[float] = mapped_column(Float)  # identification (1:N open set)
    # what the identification threshold applies to: the best score, or the margin rule (calibration.decide)
    identify_rule: Mapped[str] = mapped_column(String(16), default="margin", server_default="best")
    # what each threshold means: {"verify": OperatingPoint.to_dict(), "identify": ...}; None: defaults
    operating: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    score: Mapped[str] = mapped_column(String(64))  # "cosine" or "asnorm": what the thresholds apply to
    # the enrollment checks' cosine thresholds; None: the model's measured default
    consistency_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    duplicate_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    cohort_top_n: Mapped[int] = mapped_column(Integer, default=100, server_default="100")
    # the telephone channel's operating points (voicebank.channel); None: that channel's default
    telephone_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    telephone_identify_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    index_kind: Mapped[str] = mapped_column(String(64), default="flat", server_default="flat")
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpeakerRow(Base):
    __tablename__ = "speakers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    skeleton: Mapped[str] = mapped_column(String(1024), index=True)  # confusable.skeleton(name): look-alikes
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # the wideband voiceprint (of the wideband recordings; of all of them for a speaker enrolled
    # over the telephone only, when it is a telephone voiceprint too): what the index holds
    voiceprint: Mapped[np.ndarray] = mapped_column(Vector)
    # through the telephone channel (voicebank.channel.telephone); None for speakers enrolled before it
    telephone: Mapped[np.ndarray | None] = mapped_column(Vector, nullable=True)
    # which voiceprints it has (voicebank.channel.speaker_prints): "wideband+telephone", "telephone", "wideband"
    channels: Mapped[str] = mapped_column(String(32), index=True, default="wideband+telephone",
                                          server_default="wideband")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    utterances: Mapped[list["UtteranceRow"]] = relationship(
        back_populates="speaker", cascade="all, delete-orphan", passive_deletes=True, order_by="UtteranceRow.id"
    )


class UtteranceRow(Base):
    __tablename__ = "utterances"
    # one recording, one person: the same recording cannot be enrolled for two speakers (migration
    # 0007), by its file's hash or by what it sounds like (0009)
    __table_args__ = (UniqueConstraint("sha256", name="uq_utterances_sha256"),
                      UniqueConstraint("content_sha256", name="uq_utterances_content_sha256"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    speaker_id: Mapped[int] = mapped_column(ForeignKey("speakers.id", ondelete="CASCADE"), index=True)
    embedding: Mapped[np.ndarray] = mapped_column(Vector)  # of the recording as it came
    # the channel it came through, as measured (voicebank.channel); None: enrolled before channels
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    telephone: Mapped[np.ndarray | None] = mapped_column(Vector, nullable=True)  # through the telephone channel
    # None for an embedding imported without its recording (voicebank.bulk; migration 0010), as
    # duration_s and speech_s
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # audio.Audio.content_sha256; None: enrolled before voicebank hashed what recordings sound like
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label: Mapped[str] = mapped_column(String(1024))
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    speech_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    speaker: Mapped[SpeakerRow] = relationship(back_populates="utterances")


class ChangeRow(Base):
    """One row per speaker touched by a voiceprint change; ``seq`` is the transaction's sequence."""

    __tablename__ = "changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    speaker_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRow(Base):
    """An identification or verification decision. Append-only."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    operation: Mapped[str] = mapped_column(String(16))
    claimed: Mapped[str | None] = mapped_column(String(255), nullable=True)
    returned: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float] = mapped_column(Float)
    score_kind: Mapped[str] = mapped_column(String(64), default="cosine", server_default="cosine")
    accepted: Mapped[bool] = mapped_column(Boolean)
    model_id: Mapped[str] = mapped_column(String(255))
    recording_sha256: Mapped[str] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(255), nullable=True)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the channel decided in
    # why a probe was refused; for a scan's segment, its span in the recording
    detail: Mapped[str | None] = mapped_column(String(255), nullable=True)


class CohortRow(Base):
    """An embedding of a person who is not enrolled, for score normalization (AS-norm)."""

    __tablename__ = "cohort"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding: Mapped[np.ndarray] = mapped_column(Vector)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)  # as UtteranceRow's
    telephone: Mapped[np.ndarray | None] = mapped_column(Vector, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    """An HTTP API key. Only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # "admin" or "reader"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

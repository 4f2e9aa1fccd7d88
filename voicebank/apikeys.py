"""API keys for the HTTP server: created once, stored only as a SHA-256 hash, revocable.

A key looks like ``vb_`` + 43 URL-safe characters (256 random bits). The database keeps its first
12 characters (to find the row, and to tell keys apart in listings) and the SHA-256 of the whole
key; the key itself is returned by :meth:`ApiKeys.create` and never again. An ``admin`` key may
change the bank; a ``reader`` key may only identify, verify and read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from . import validate
from .errors import InvalidInputError, VoiceBankError
from .store import ApiKeyRow, Store, utcnow
from .store.repository_records import KeyRecords

ADMIN, READER = "admin", "reader"
ROLES = (ADMIN, READER)
KEY_START = "vb_"
PREFIX_CHARS = 12  # "vb_" + 9 random characters: unique enough to find the row, useless to an attacker
_KEY_FORMAT = re.compile(r"vb_[A-Za-z0-9_-]{20,200}")


class ApiKeyError(VoiceBankError):
    """An API key could not be created, found or used."""


class InvalidApiKeyError(ApiKeyError):
    """A presented key is unknown, malformed or revoked."""


class ApiKeyNotFoundError(ApiKeyError):
    """No API key of that name exists."""


class DuplicateApiKeyError(ApiKeyError):
    """An API key of that name already exists (revoked names stay taken, so the audit stays clear)."""


@dataclass(frozen=True)
class ApiKey:
    """What is known about a key besides the key itself."""

    name: str
    role: str  # "admin" or "reader"
    prefix: str  # the key's first 12 characters
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class ApiKeys:
    """The API keys stored in one bank's database (``VoiceBank.api_keys``). Thread-safe."""

    def __init__(self, store: Store):
        self._store = store
        self._rows = KeyRecords(store)

    def create(self, name: str, role: str) -> tuple[ApiKey, str]:
        """A new key called ``name`` with ``role``. Returns its record and the key itself, which
        is not stored and cannot be shown again."""
        name = validate.name(name)
        if role not in ROLES:
            raise InvalidInputError(f"an API key's role is one of {', '.join(ROLES)}, not {role!r}.")
        key = KEY_START + secrets.token_urlsafe(32)
        row = ApiKeyRow(name=name, role=role, prefix=key[:PREFIX_CHARS], key_hash=_hash(key), created_at=utcnow())
        try:
            added = self._rows.add(row)
        except IntegrityError as exc:  # another process took the name first
            raise DuplicateApiKeyError(_taken(name)) from exc
        if not added:
            raise DuplicateApiKeyError(_taken(name))
        return _record(row), key

    def discard(self, key: str) -> None:
        """Delete the key ``key`` as if never created, its name free again: for a key that could not
        be shown to anyone (the output it was written to failed), which would otherwise sit there
        valid and unknown."""
        self._rows.discard(_hash(key))

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, by name. Keys themselves are never available."""
        return [_record(r) for r in self._rows.all()]

    def revoke(self, name: str) -> ApiKey:
        """Revoke the key called ``name``: it stops working at once. Returns its record."""
        name = validate.name(name)
        row, revoked_before = self._rows.revoke(name, utcnow())
        if row is None:
            raise ApiKeyNotFoundError(f"no API key named {name!r} (`voicebank apikey list` shows them).")
        if revoked_before is not None:
            raise ApiKeyError(f"the API key {name!r} was already revoked on {revoked_before:%Y-%m-%d %H:%M:%S}.")
        return _record(row)

    def authenticate(self, key: str) -> ApiKey:
        """The active key matching ``key``, compared in constant time; else :class:`InvalidApiKeyError`."""
        if not isinstance(key, str) or not _KEY_FORMAT.fullmatch(key):
            raise InvalidApiKeyError(_invalid())
        digest = _hash(key)
        self._store.catch_up()  # on a replica: a key the primary has revoked is revoked here too
        found = [r for r in self._rows.with_prefix(key[:PREFIX_CHARS]) if hmac.compare_digest(r.key_hash, digest)]
        if not found or found[0].revoked_at is not None:
            raise InvalidApiKeyError(_invalid())
        return _record(found[0])


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.name, row.role, row.prefix, row.created_at, row.revoked_at)


def _taken(name: str) -> str:
    return f"an API key named {name!r} already exists (names of revoked keys stay taken): choose another name."


def _invalid() -> str:
    return "invalid or revoked API key: create one with `voicebank apikey create NAME --role reader|admin`."

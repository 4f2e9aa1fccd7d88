"""Text files a user names (trial lists, import manifests), read a line at a time within limits.

Reading such a file whole lets ``/dev/zero``, a pipe or a multi-gigabyte file exhaust memory
before a single line is looked at; here a file that is not a regular file, a line longer than any
real one, or a file past the size or line limits is refused at once, with what to do.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import InvalidInputError

MAX_LINE_BYTES = 64 * 1024
MAX_BYTES = 256 * 1024 * 1024
MAX_LINES = 2_000_000  # VoxCeleb1-H, among the largest public trial lists, has 550,000


def lines(path: str | os.PathLike, what: str) -> Iterator[str]:
    """The lines of the UTF-8 text file at ``path``, each with its line ending (a byte-order mark
    at the start is dropped). ``what`` names the file in errors ("the trial list"). Raises
    :class:`InvalidInputError` for a missing, unreadable or non-regular file and for one past the
    limits; :class:`UnicodeDecodeError` for bytes that are not UTF-8, for the caller to word."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror or exc}.") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(f"{what} {path} is not a regular file (a device, a pipe or a folder): save it to a "
                                    "file and give that.")
        if info.st_size > MAX_BYTES:
            raise InvalidInputError(_too_large(what, path))
        read = 0
        for number in range(1, MAX_LINES + 2):
            try:
                line = f.readline(MAX_LINE_BYTES + 1)
            except OSError as exc:
                raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror or exc}.") from exc
            if not line:
                return
            read += len(line)
            if number > MAX_LINES or read > MAX_BYTES:  # a file that grows while it is read
                raise InvalidInputError(_too_large(what, path))
            if len(line) > MAX_LINE_BYTES:
                raise InvalidInputError(f"{what} {path}: line {number} is longer than {MAX_LINE_BYTES // 1024} KiB; "
                                        "is it a text file? Give one line per entry.")
            yield line.decode("utf-8-sig" if number == 1 else "utf-8")


def _too_large(what: str, path: Path) -> str:
    return (f"{what} {path} is larger than voicebank reads ({MAX_BYTES // 2**20} MiB, {MAX_LINES:,} lines): "
            "split it into smaller files.")

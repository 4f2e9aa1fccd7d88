"""Who to enroll, read from a folder tree or a CSV file (for ``voicebank import``).

A folder: one sub-folder per speaker, named after them, holding their recordings (sub-folders
of it are searched too)::

    people/alice/a1.wav  people/alice/a2.flac  people/bob/b1.mp3 ...

A CSV file: a header with at least the columns ``name`` and ``file``, one line per recording;
file paths are relative to the CSV's folder; every other column is metadata, the same on each of
a speaker's lines (empty cells are left out)::

    name,file,employee_id
    alice,alice/a1.wav,42
    alice,alice/a2.flac,42
"""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

from . import textfile
from .errors import InvalidInputError
from .results import Enrollment

AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .m4a .aac .wma .aif .aiff .aifc .au .snd .webm .caf".split()
)


def read(source: str | Path) -> list[Enrollment]:
    """The speakers described by a folder tree or a CSV file, in order (folders by name)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folders(path)
    if path.exists():  # a file, or something that is not one, which read_csv refuses with what to do
        return read_csv(path)
    raise InvalidInputError(f"{source} does not exist: give a folder with one sub-folder per speaker, or a CSV file.")


def read_folders(root: Path) -> list[Enrollment]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InvalidInputError(
            f"{root} holds no speaker folders: put each speaker's recordings in a folder named after them "
            f"({root / 'alice' / 'a1.wav'}, ...), or give a CSV file."
        )
    return [Enrollment(folder.name, sorted(f for f in folder.rglob("*") if _audio_file(f, folder))) for folder in folders]


def _audio_file(path: Path, folder: Path) -> bool:
    """An audio file by its suffix, not hidden (macOS's ._a1.wav resource forks) and not in a
    hidden or __MACOSX folder of the archive it came from."""
    parts = path.relative_to(folder).parts
    return (path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
            and not any(p.startswith(".") or p == "__MACOSX" for p in parts))


def read_csv(path: Path) -> list[Enrollment]:
    try:
        reader = csv.DictReader(textfile.lines(path, "the manifest"))
        rows = [(reader.line_num, row) for row in reader]  # the line each row ends on
        columns = [c.strip() for c in reader.fieldnames or []]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"{path}: not a readable CSV file ({exc}). Save it as UTF-8 CSV.") from exc
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise InvalidInputError(f"{path}: the header names the column {twice[0]!r} more than once; name each once.")
    if "name" not in columns or "file" not in columns:
        raise InvalidInputError(
            f"{path}: needs a header line with the columns name and file (found: {', '.join(columns) or 'none'})."
        )
    speakers: dict[str, tuple[list[Path], dict[str, str]]] = {}
    for line, row in rows:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        row["name"] = unicodedata.normalize("NFC", row["name"])  # as the bank will store it
        if not row["name"] or not row["file"]:
            raise InvalidInputError(f"{path}, line {line}: the name and the file must both be given.")
        files, metadata = speakers.setdefault(row["name"], ([], {}))
        if path.parent / row["file"] not in files:  # the same line twice is harmless
            files.append(path.parent / row["file"])
        for key, value in row.items():
            if key in ("name", "file") or not value:
                continue
            if metadata.setdefault(key, value) != value:
                raise InvalidInputError(
                    f"{path}, line {line}: {key} of {row['name']} is {value!r} here but {metadata[key]!r} on an "
                    "earlier line; give a speaker's metadata the same on each line."
                )
    if not speakers:
        raise InvalidInputError(f"{path}: lists no recordings.")
    return [Enrollment(name, files, metadata or None) for name, (files, metadata) in speakers.items()]

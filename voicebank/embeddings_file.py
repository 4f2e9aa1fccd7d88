"""A file of embeddings made elsewhere, to enroll many people from (``voicebank import FILE.npz``).

A NumPy ``.npz`` archive, written by ``numpy.savez`` or ``numpy.savez_compressed`` (or :func:`write`):

- ``model``: text, the ``model_id`` of the model that made the embeddings (the bank's
  ``bank.model_id``, as ``voicebank init --json`` prints it); a bank refuses any other;
- ``dimension``: an integer, the embeddings' dimension (the bank's);
- ``names``: (n,) text, one speaker each, under the rules ``voicebank enroll`` applies to names;
- ``speaker``: (m,) integers, for each embedding the index in ``names`` of its speaker:
  non-decreasing (0, 0, 0, 1, 1, 2, ...), every speaker at least once;
- ``embeddings``: (m, dimension) floats (16, 32 or 64 bits), one utterance each; any length but
  zero, L2-normalized here as a model's own output is;
- ``metadata`` (optional): (n,) text, each a JSON object ("" for none), stored with the speaker.

Everything is checked before anything is stored (:meth:`EmbeddingsFile.check`). The two large arrays
are read a block of rows at a time, straight from the archive, so memory stays the same whatever
the file's size. They are not memory-mapped: a mapped file's pages count in the process's resident
memory as they are touched, so reading 100,000 people through a map would grow it by the file's
size; a block read leaves them in the page cache, which the kernel reclaims. Nothing is unpickled:
text must be NumPy text arrays (``np.array(names)``), not Python objects. What an array's header
declares is checked against the archive's directory before it is decompressed (a name or model_id
of at most 1024 characters, one speaker index per embedding, embeddings that inflate at most
100-fold), so a small file declaring huge arrays (a zip bomb) is refused unread; so is anything but
a regular file (a FIFO would block, /dev/zero never end).
"""

from __future__ import annotations

import json
import math
import stat
import unicodedata
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, NoReturn, Sequence

import numpy as np

from . import validate
from .confusable import skeleton
from .errors import InvalidInputError, ModelMismatchError
from .vectors import l2_normalize

REQUIRED = ("model", "dimension", "names", "speaker", "embeddings")
OPTIONAL = ("metadata",)
BLOCK_ROWS = 4096  # embeddings read at a time: 8 MiB of float32 at 512 dimensions
MAX_TEXT = 1024  # characters of a name or model_id read at most (a name is at most validate.MAX_NAME_CHARS)
MAX_METADATA_CHARS = 4 * validate.MAX_METADATA_BYTES  # of one speaker's metadata JSON, spaces included
BLOCK_BYTES = 16 << 20  # read at a time at most, whatever a row's width
MAX_RATIO = 100  # embeddings inflate at most this much (floats hardly compress; a zip bomb inflates 1000-fold)
FIX_ORDER = ("order = np.argsort(speaker, kind='stable'), then save embeddings[order] and speaker[order]")


def write(path: str | Path, model: str, names: Sequence[str], speaker: Sequence[int] | np.ndarray,
          embeddings: np.ndarray, metadata: Sequence[dict[str, Any] | None] | None = None) -> Path:
    """Write a file :class:`EmbeddingsFile` reads (uncompressed: embeddings hardly compress).
    ``embeddings`` is (m, dimension) with its speaker's index in ``names`` in ``speaker``; returns
    the path written (numpy adds ``.npz`` when it is missing)."""
    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    embeddings = np.asarray(embeddings)
    arrays = {"model": np.array(str(model)), "dimension": np.array(embeddings.shape[-1]),
              "names": np.array(list(names), dtype=str), "speaker": np.asarray(speaker, dtype=np.int64),
              "embeddings": embeddings}
    if metadata is not None:
        arrays["metadata"] = np.array([json.dumps(m, ensure_ascii=False) if m else "" for m in metadata], dtype=str)
    np.savez(path, **arrays)
    return path


class FileSpeaker(NamedTuple):
    """One speaker of a file: ``index`` in names, ``name`` as the bank stores it (NFC) and its
    look-alike ``skeleton``, ``metadata``, (k, dimension) float32 L2-normalized ``embeddings``,
    which are rows ``first_row`` to ``first_row + k`` of the file's."""

    index: int
    name: str
    skeleton: str
    metadata: dict[str, Any]
    embeddings: np.ndarray
    first_row: int


class EmbeddingsFile:
    """One ``.npz`` file of embeddings: its header read and its layout checked on opening (cheap);
    :meth:`check` reads everything else; :meth:`speakers` hands out one speaker at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._checked: tuple[list[str], list[str]] | None = None  # (names as stored, skeletons) once checked
        try:
            if not stat.S_ISREG(self.path.stat().st_mode):  # a FIFO would block, /dev/zero never end
                self._fail("is not a regular file")
            with zipfile.ZipFile(self.path) as archive:
                present = {Path(n).stem for n in archive.namelist() if n.endswith(".npy")}
                self._refuse_arrays(present)
                self.model = self._text(archive, "model")
                self.dimension = self._integer(archive, "dimension")
                rows, dtype = _shape(archive, "embeddings", self._fail)
                # Sizes are checked against the archive's directory before anything is decompressed: a
                # small file declaring (or inflating to) huge arrays is refused, not read into memory.
                _refuse_bomb(archive, "embeddings", self._fail)
                count = rows[0] if len(rows) == 2 else 0
                self._names = _whole(archive, "names", self._fail, count * 4 * MAX_TEXT, 4 * MAX_TEXT)
                speaker = _whole(archive, "speaker", self._fail, count * 8, 8)
                meta = _shape(archive, "metadata", self._fail) if "metadata" in present else None
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            self._fail(f"not a readable .npz file ({exc}); write one with numpy.savez "
                       "(`voicebank import --help` shows the layout)")
        if self._names.ndim != 1 or self._names.dtype.kind != "U" or not len(self._names):
            self._fail("names must be a non-empty 1-D text array (np.array(names))")
        if dtype.kind != "f" or len(rows) != 2 or rows[1] != self.dimension:
            self._fail(f"embeddings must be a (utterances, {self.dimension}) array of floats, as dimension says; "
                       f"this one is {dtype} of shape {rows}")
        if meta is not None and meta[1].itemsize > 4 * MAX_METADATA_CHARS:
            self._fail(f"metadata holds text of up to {meta[1].itemsize // 4} characters; at most {MAX_METADATA_CHARS} "
                       "are read")
        if meta is not None and (meta[1].kind != "U" or meta[0] != (len(self._names),)):
            self._fail(f"metadata must be text, one JSON object per name ({len(self._names)}); found {meta[1]} of "
                       f"shape {meta[0]}")
        self.rows, self._metadata = int(rows[0]), meta is not None
        self._bounds = self._speaker_bounds(speaker)

    @property
    def count(self) -> int:
        """How many speakers the file names."""
        return len(self._names)

    @property
    def label(self) -> str:
        return self.path.name

    def refuse_other_model(self, model_id: str, dimension: int) -> None:
        """Raise :class:`ModelMismatchError` unless the embeddings were made by ``model_id`` at
        ``dimension`` (a bank's)."""
        if self.model != model_id or self.dimension != dimension:
            raise ModelMismatchError(
                f"{self.path} holds embeddings of the model {self.model!r} ({self.dimension}-dim), but this bank's "
                f"model is {model_id!r} ({dimension}-dim): scores across two models mean nothing. Embed with the "
                "bank's model, or import into a bank created with that one. Nothing was imported.")

    def check(self, progress: Callable[[int, int, str], None] | None = None) -> None:
        """Read the whole file and raise the first problem found, in a message that names where it
        is: a name that ``enroll`` would refuse, given twice or a look-alike of another; metadata
        that is not a JSON object; an embedding that holds NaN, infinity or only zeros. ``progress``
        gets (speakers checked, speakers, label) once per block of rows."""
        names, shapes, skeletons = [], {}, []
        for k, raw in enumerate(self._names):
            try:
                name = validate.new_name(str(raw))
            except InvalidInputError as exc:
                self._fail(f"names[{k}] ({str(raw)!r}): {str(exc).rstrip('.')}")
            shape = skeleton(name)
            if shape in shapes:
                j = shapes[shape]
                how = "is" if names[j] == name else "looks like"
                self._fail(f"names[{k}] ({name!r}) {how} names[{j}] ({names[j]!r}) (names are compared as the bank "
                           "stores them, and look-alike characters as one): give each speaker once, by a name that "
                           "cannot be mistaken for another")
            shapes[shape] = k
            names.append(name)
            skeletons.append(shape)
        del shapes
        if self._metadata:
            for k, text in enumerate(self._column("metadata")):
                self._speaker_metadata(k, text, names)
        bad, first = 0, None
        for start, block in self._blocks():
            wrong = np.flatnonzero(~np.isfinite(block).all(axis=1) | ~block.any(axis=1))
            bad, first = bad + len(wrong), first if first is not None or not len(wrong) else start + int(wrong[0])
            if progress:
                done = int(np.searchsorted(self._bounds, start + len(block), side="right")) - 1
                progress(done, self.count, self.label)
        if first is not None:
            more = f" (and {bad - 1} other rows)" if bad > 1 else ""
            self._fail(f"{self._row_problem(first, names)}{more}: every embedding must be finite and not all zeros")
        self._checked = names, skeletons

    def speakers(self, block_rows: int = BLOCK_ROWS) -> Iterator[FileSpeaker]:
        """Each speaker in order (:class:`FileSpeaker`), a block of rows read at a time; :meth:`check`
        first if not done. Raises if the file changed since it was checked and now holds an
        embedding that is not usable."""
        if self._checked is None:
            self.check()
        names, skeletons = self._checked
        metadata = self._column("metadata") if self._metadata else iter(())
        speaker, pending = 0, []
        for start, block in self._blocks(block_rows):
            if not (np.isfinite(block).all() and block.any(axis=1).all()):
                self._fail("changed since it was checked: it now holds an unusable embedding; check it again")
            block, at = l2_normalize(_in_range(block)), 0
            while speaker < self.count and self._bounds[speaker + 1] <= start + len(block):
                end = int(self._bounds[speaker + 1]) - start
                rows = np.concatenate([*pending, block[at:end]]) if pending else block[at:end]
                meta = self._speaker_metadata(speaker, next(metadata, ""), names)
                yield FileSpeaker(speaker, names[speaker], skeletons[speaker], meta, rows, int(self._bounds[speaker]))
                speaker, pending, at = speaker + 1, [], end
            if at < len(block):
                pending.append(block[at:])

    # -- reading -----------------------------------------------------------------------------------
    def _blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (rows, dimension) float32 block) through the embeddings, in order."""
        for start, block in _stream(self.path, "embeddings", block_rows, self._fail):
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, and is refused
                block = block.astype(np.float32)
            yield start, block

    def _column(self, key: str) -> Iterator[str]:
        for _, block in _stream(self.path, key, BLOCK_ROWS, self._fail):
            yield from (str(x) for x in block)

    def _speaker_bounds(self, speaker: np.ndarray) -> np.ndarray:
        """(n + 1,) row bounds: speaker k's embeddings are rows bounds[k] to bounds[k + 1]."""
        if speaker.ndim != 1 or speaker.dtype.kind not in "iu" or len(speaker) != self.rows:
            self._fail(f"speaker must be integers, one per embedding ({self.rows}); found {speaker.dtype} of shape "
                       f"{speaker.shape}")
        outside = np.flatnonzero((speaker < 0) | (speaker >= self.count))
        if len(outside):
            k = int(outside[0])
            self._fail(f"speaker[{k}] is {speaker[k]}, but names has {self.count} entries (0 to {self.count - 1})")
        down = np.flatnonzero(np.diff(speaker) < 0)
        if len(down):
            k = int(down[0]) + 1
            self._fail(f"speaker must be non-decreasing (each speaker's embeddings together, in the order of names): "
                       f"speaker[{k}] is {speaker[k]} after {speaker[k - 1]}. Sort them: {FIX_ORDER}")
        counts = np.bincount(speaker, minlength=self.count)
        if not counts.all():
            k = int(np.flatnonzero(counts == 0)[0])
            self._fail(f"names[{k}] ({str(self._names[k])!r}) has no embeddings (no entry of speaker is {k}): give "
                       "each speaker at least one, or leave the name out")
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _speaker_metadata(self, k: int, text: str, names: list[str]) -> dict[str, Any]:
        if not text.strip():
            return {}
        try:
            return validate.metadata(json.loads(text))
        except (ValueError, InvalidInputError) as exc:
            why = str(exc).rstrip(".") if isinstance(exc, InvalidInputError) else f"not JSON ({exc})"
            self._fail(f"metadata[{k}] ({names[k]!r}): {why}; give a JSON object, or \"\" for none")

    def _row_problem(self, row: int, names: list[str]) -> str:
        k = int(np.searchsorted(self._bounds, row, side="right")) - 1
        return f"embeddings row {row} (names[{k}], {names[k]!r}) holds NaN, infinity or only zeros"

    def _refuse_arrays(self, present: set[str]) -> None:
        missing = [k for k in REQUIRED if k not in present]
        if missing:
            self._fail(f"lacks {', '.join(missing)}: the file needs the arrays {', '.join(REQUIRED)} "
                       "(metadata is optional)")
        unknown = sorted(present - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            self._fail(f"holds arrays voicebank does not know ({', '.join(unknown)}); the known ones are "
                       f"{', '.join(REQUIRED + OPTIONAL)}")

    def _text(self, archive: zipfile.ZipFile, key: str) -> str:
        value = _whole(archive, key, self._fail, 4 * MAX_TEXT, 4 * MAX_TEXT)
        if value.shape != () or value.dtype.kind != "U" or not str(value).strip():
            self._fail(f"{key} must be text, the model_id of the bank's model (np.array(bank.model_id))")
        return unicodedata.normalize("NFC", str(value).strip())

    def _integer(self, archive: zipfile.ZipFile, key: str) -> int:
        value = _whole(archive, key, self._fail, 16, 16)
        if value.shape != () or value.dtype.kind not in "iu" or int(value) < 1:
            self._fail(f"{key} must be a positive integer (np.array(512))")
        return int(value)

    def _fail(self, what: str) -> NoReturn:
        raise InvalidInputError(f"{self.path}: {what.rstrip('.')}. Nothing was imported.")


def _in_range(block: np.ndarray) -> np.ndarray:
    """Rows whose float32 norm overflows (entries near 1e38) or underflows (near 1e-20 and below)
    first divided by their largest entry: normalized as they were, the first became all zeros and
    the second stayed at a norm of about 0, voiceprints that match no one, stored without a word."""
    with np.errstate(over="ignore", under="ignore"):  # the very cases looked for
        norms = np.linalg.norm(block, axis=1)
    wrong = ~(np.isfinite(norms) & (norms >= 1e-6))
    if wrong.any():
        block = block.copy()
        block[wrong] /= np.abs(block[wrong]).max(axis=1, keepdims=True)
    return block


def _shape(archive: zipfile.ZipFile, key: str, fail: Callable[[str], NoReturn]) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of the .npy member ``key``, from its header alone."""
    shape, dtype, handle = _header(archive, key, fail)
    handle.close()
    return shape, dtype


def _header(archive: zipfile.ZipFile, key: str, fail: Callable[[str], NoReturn]) -> tuple[tuple, np.dtype, Any]:
    """(shape, dtype, the member opened after its header) of the .npy member ``key``."""
    handle = archive.open(f"{key}.npy")
    version = np.lib.format.read_magic(handle)
    if version not in ((1, 0), (2, 0)):
        fail(f"{key} is in .npy format {version}, which voicebank does not read; save it with numpy.savez")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(handle)
    if dtype.hasobject:
        fail(f"{key} is stored as Python objects (pickled), which voicebank never loads; save it as a NumPy array "
             f"(text as np.array(values, dtype=str))")
    if fortran and len(shape) > 1:
        fail(f"{key} is stored column by column (Fortran order); save np.ascontiguousarray({key})")
    return shape, dtype, handle


def _refuse_bomb(archive: zipfile.ZipFile, key: str, fail: Callable[[str], NoReturn]) -> None:
    """Refuse the member ``key`` when the archive's directory says it inflates more than
    MAX_RATIO-fold: read before any of it is decompressed."""
    info = archive.getinfo(f"{key}.npy")
    if info.file_size > MAX_RATIO * max(info.compress_size, 1) + 65536:
        fail(f"{key} inflates from {info.compress_size} to {info.file_size} bytes, which no array of embeddings does "
             "(a zip bomb?)")


def _whole(archive: zipfile.ZipFile, key: str, fail: Callable[[str], NoReturn], most: int | None = None,
           itemsize: int | None = None) -> np.ndarray:
    """A small member read whole (``names``, ``speaker``: bytes per person, not per number), refused
    unread when its header declares more than ``most`` bytes or items wider than ``itemsize``, or
    more than the archive's directory says the member holds."""
    shape, dtype, handle = _header(archive, key, fail)
    with handle:
        count = math.prod(shape)  # Python integers: no overflow
        size = count * dtype.itemsize
        if itemsize is not None and dtype.itemsize > itemsize:
            fail(f"{key} holds items of {dtype.itemsize} bytes ({dtype}); at most {itemsize} are read "
                 f"({MAX_TEXT} characters of text)" if dtype.kind == "U" else f"{key} must be 64-bit integers or "
                 f"narrower, not {dtype}")
        if (most is not None and size > most) or size > archive.getinfo(f"{key}.npy").file_size or count < 0:
            fail(f"{key} declares {shape} of {dtype}, more than the file holds or than one per embedding")
        data = handle.read(size)
    if len(data) != count * dtype.itemsize:
        fail(f"{key} is cut short")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _stream(path: Path, key: str, block_rows: int, fail: Callable[[str], NoReturn]) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, block) of the member ``key``, ``block_rows`` rows at a time."""
    try:
        with zipfile.ZipFile(path) as archive:
            shape, dtype, handle = _header(archive, key, fail)
            width = math.prod(shape[1:]) * dtype.itemsize
            block_rows = max(1, min(block_rows, BLOCK_BYTES // max(width, 1)))
            with handle:
                for start in range(0, shape[0], block_rows):
                    rows = min(block_rows, shape[0] - start)
                    data = handle.read(rows * width)
                    if len(data) != rows * width:
                        fail(f"{key} is cut short at row {start + len(data) // max(width, 1)} of {shape[0]}")
                    yield start, np.frombuffer(data, dtype=dtype).reshape((rows, *shape[1:]))
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        fail(f"cannot be read ({exc})")

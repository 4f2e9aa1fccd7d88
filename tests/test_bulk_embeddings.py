"""Enrolling many people from embeddings made elsewhere: ``bank.bulk``, ``voicebank import FILE.npz``
(voicebank.embeddings_file, voicebank.bulk, voicebank.store.repository_bulk), on real SQLite and
PostgreSQL with real FAISS; a process killed with SIGKILL in the middle of an import, then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from conftest import REPO, SR, TINY_THRESHOLD, synth_voice, table_dump
from voicebank import VoiceBank
from voicebank.channel import NO_TELEPHONE, telephone
from voicebank.embeddings_file import EmbeddingsFile, write
from voicebank.errors import InvalidInputError, ModelMismatchError, NotEnoughSpeechError
from voicebank.store import resolve_url
from voicebank.vectors import l2_normalize, voiceprint

pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]

DIM = 24  # the fake embedder's and the tiny WavLM's
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")


def people(n: int, per: int | list[int] = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n centers, their speakers' embeddings: a few close to each center, each speaker's index)."""
    rng = np.random.default_rng(seed)
    centers = l2_normalize(rng.standard_normal((n, DIM)))
    counts = [per] * n if isinstance(per, int) else per
    rows = np.concatenate([centers[k] + 0.001 * rng.standard_normal((c, DIM)) for k, c in enumerate(counts)])
    return centers, rows.astype(np.float32), np.repeat(np.arange(n), counts)


def staff(path: Path, bank, names=NAMES, per: int | list[int] = 3,
          metadata=None) -> tuple[Path, np.ndarray, np.ndarray]:
    centers, rows, speaker = people(len(names), per)
    return write(path, bank.model_id, names, speaker, rows, metadata), centers, rows


def speaker_rows(db_url: str) -> list[tuple[str, int]]:
    """(name, how many rows of that name) for every name in the speakers table, straight from SQL."""
    engine = sa.create_engine(resolve_url(db_url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT name, COUNT(*) FROM speakers GROUP BY name"))]
    finally:
        engine.dispose()


# -- the round trip ---------------------------------------------------------------------------------

def test_an_import_enrolls_everyone_once_and_again_skips_them(db_url, model, tmp_path):
    with VoiceBank.open(db_url, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        per = [3, 1, 2, 3, 3, 2, 4]
        path, centers, rows = staff(tmp_path / "staff.npz", bank, per=per,
                                    metadata=[{"employee_id": 42}, None, None, None, None, None, {"room": "B2"}])
        done: list[tuple[int, int]] = []
        report = bank.bulk.import_embeddings(path, batch_size=3, progress=lambda d, t, _: done.append((d, t)))
        assert (report.enrolled, report.skipped, report.failed, report.batches) == (7, 0, (), 3)
        assert done == [(3, 7), (6, 7), (7, 7)]
        assert [s.name for s in bank.speakers()] == sorted(NAMES)
        alice = bank.speaker("alice")
        assert alice.metadata == {"employee_id": 42} and bank.speaker("grace").metadata == {"room": "B2"}
        assert [(r.label, r.sha256, r.duration_s, r.speech_s) for r in alice.recordings] == [
            ("staff.npz[0]", None, None, None), ("staff.npz[1]", None, None, None), ("staff.npz[2]", None, None, None)]
        first = np.cumsum([0, *per])
        for k, name in enumerate(NAMES):  # the voiceprint enrollment would make of the same embeddings
            _, stored = bank.voiceprint(name)
            np.testing.assert_allclose(stored, voiceprint(rows[first[k]:first[k + 1]]), atol=1e-6)
        found = bank.identify_embeddings(centers, top_k=2)
        assert [r.match.name if r.match else None for r in found] == list(NAMES)
        assert bank.index.check().ok

        again = bank.bulk.import_embeddings(path, batch_size=3)
        assert (again.enrolled, again.skipped, again.batches) == (0, 7, 0)
    assert sorted(speaker_rows(db_url)) == [(name, 1) for name in sorted(NAMES)]


@pytest.mark.postgres
def test_postgresql_measures_the_tables_again_as_the_import_doubles_them(pg_url, model, tmp_path):
    """Without ANALYZE, a statement prepared while the table was empty keeps its plan (a scan of the
    whole table for each batch's names) as it grows: 2.5 s a batch at 85,000 people."""
    with VoiceBank.open(pg_url, model, create=True, threshold=TINY_THRESHOLD) as bank:
        names = [f"p{k}" for k in range(40)]
        bank.bulk.import_embeddings(staff(tmp_path / "staff.npz", bank, names=names, per=1)[0], batch_size=10)
    engine = sa.create_engine(resolve_url(pg_url))
    try:
        with engine.connect() as conn:
            measured = dict(conn.execute(sa.text("SELECT relname, reltuples FROM pg_class "
                                                 "WHERE relname IN ('speakers', 'utterances')")).all())
    finally:
        engine.dispose()
    assert measured == {"speakers": 40, "utterances": 40}  # measured at 10, 20 and 40 people; -1: never


def test_the_voiceprint_is_the_one_enrollment_makes_of_the_same_embeddings(bank, voices, tmp_path):
    bank.enroll("alice", voices["alice"])
    utterances = np.stack([bank.embed(v) for v in voices["alice"]])
    path = write(tmp_path / "again.npz", bank.model_id, ["alice-imported"], [0, 0, 0], utterances * 3.0)  # any length
    bank.bulk.import_embeddings(path)
    _, enrolled = bank.voiceprint("alice")
    _, imported = bank.voiceprint("alice-imported")
    assert float(enrolled @ imported) >= 0.99999


def test_embeddings_at_the_ends_of_float32_are_stored_as_the_unit_vectors_they_point_along(bank, tmp_path):
    """Rows scaled to 1e38 or to 1e-40 (finite, not zero: the check let them through) were normalized
    in float32, whose norm overflowed or underflowed: stored all zeros, or at a norm of about 0,
    voiceprints scoring 0 against everyone, and the import said it had enrolled them."""
    centers, rows, speaker = people(3)
    rows[speaker == 0] *= np.float32(1e38)
    rows[speaker == 1] *= np.float32(1e-40)  # subnormal
    bank.bulk.import_embeddings(write(tmp_path / "ends.npz", bank.model_id, NAMES[:3], speaker, rows))
    for k, name in enumerate(NAMES[:3]):
        _, print_ = bank.voiceprint(name)
        assert abs(float(np.linalg.norm(print_)) - 1) < 1e-5 and float(print_ @ centers[k]) > 0.999, name


def test_a_name_enrolled_or_like_an_enrolled_one_is_skipped_or_fails_alone(bank, voices, tmp_path):
    bank.enroll("alice", voices["alice"][:2])
    bank.enroll("carol", voices["carol"][:2])
    path, _, _ = staff(tmp_path / "staff.npz", bank, names=("\u0430lice", "bob", "carol"))  # a Cyrillic а
    report = bank.bulk.import_embeddings(path)
    assert (report.enrolled, report.skipped) == (1, 1)
    why = ("'\u0430lice' looks like the enrolled 'alice' (they differ only in look-alike characters, e.g. a "
           "Cyrillic 'а' for a Latin 'a'): choose a name that cannot be mistaken for it. Nothing was stored for it.")
    assert report.failed == (("\u0430lice", why),)
    assert [s.name for s in bank.speakers()] == ["alice", "bob", "carol"]
    assert [r.sha256 is None for r in bank.speaker("carol").recordings] == [False, False]  # hers, untouched


# -- what the rest of the product makes of people with no recording and no telephone voiceprint ----

def test_check_reindex_calibrate_and_a_telephone_call_say_what_imported_people_lack(bank, tmp_path, model):
    from voicebank.cli import main

    names = [f"person {k}" for k in range(12)]
    path = staff(tmp_path / "staff.npz", bank, names=names)[0]
    bank.bulk.import_embeddings(path)
    report = bank.index.check()
    assert report.ok and report.lacking == {"telephone": 12, "wideband": 0}
    assert bank.index.rebuild() == 12
    call = telephone(synth_voice(150.0, seconds=3.0, seed=5), SR)
    result = bank.identify((call, SR))
    assert result.channel["decided"] == "wideband" and result.channel["heard"]["channel"] == "telephone"
    assert f"12 speakers have no telephone voiceprint ({NO_TELEPHONE})" in result.channel["note"]
    calibration = bank.thresholds.calibrate()
    assert NO_TELEPHONE in calibration.skipped["telephone"]
    assert calibration.chosen  # wideband is measured on the imported embeddings themselves
    bank.close()
    checked = CliRunner().invoke(main, ["--db", str(tmp_path / "bank.db"), "--model", model, "check"])
    assert checked.exit_code == 0, checked.output
    assert f"channels: 12 speakers have no telephone voiceprint ({NO_TELEPHONE})" in checked.stdout
    shown = CliRunner().invoke(main, ["--db", str(tmp_path / "bank.db"), "--model", model, "show", "person 3"])
    assert shown.stdout.splitlines()[-3:] == [f"  staff.npz[{9 + k}]  imported embedding (no recording)"
                                              for k in range(3)]


def test_recordings_added_to_an_imported_person_are_averaged_in_and_bring_the_telephone_voiceprint(bank, voices,
                                                                                                     tmp_path):
    utterances = bank.embed(voices["bob"][0])[None, :]
    bank.bulk.import_embeddings(write(tmp_path / "bob.npz", bank.model_id, ["bob"], [0], utterances))
    assert bank.voiceprint("bob", "telephone")[1] is None
    with pytest.raises(NotEnoughSpeechError):  # an imported embedding brings no speech known: the new ones must
        bank.add_recordings("bob", [voices["bob"][1]])
    speaker = bank.add_recordings("bob", voices["bob"][1:])
    assert [r.sha256 is None for r in speaker.recordings] == [True, False, False]
    _, wide = bank.voiceprint("bob")
    every = np.stack([*utterances, *map(bank.embed, voices["bob"][1:])])
    np.testing.assert_allclose(wide, voiceprint(every), atol=1e-6)
    assert bank.voiceprint("bob", "telephone")[1] is not None and bank.index.lacking("telephone") == 0


def test_the_server_shows_an_imported_person(bank, tmp_path):
    import httpx

    from voicebank.server import create_app, serve_in_thread

    bank.bulk.import_embeddings(staff(tmp_path / "staff.npz", bank, names=("alice",))[0])
    key = bank.api_keys.create("reader", "reader")[1]
    with serve_in_thread(create_app(bank)) as url:
        answer = httpx.get(f"{url}/speakers/alice", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    recordings = answer.json()["recordings"]
    assert [(r["sha256"], r["duration_s"], r["speech_s"]) for r in recordings] == [(None, None, None)] * 3
    assert answer.json()["speech_s"] == 0


# -- refusals: one line each, nothing stored ----------------------------------------------------------

def arrays(bank_model: str, **change) -> dict:
    """A good file's arrays (alice 2 embeddings, bob 2, carol 1) with ``change`` applied (None: left out)."""
    _, rows, speaker = people(3, [2, 2, 1])
    good = {"model": np.array(bank_model), "dimension": np.array(DIM), "names": np.array(["alice", "bob", "carol"]),
            "speaker": speaker, "embeddings": rows}
    good.update(change)
    return {k: v for k, v in good.items() if v is not None}


def _rows(**at) -> np.ndarray:
    rows = people(3, [2, 2, 1])[1].astype(np.float64)
    for row, value in at.items():
        rows[int(row[1:])] = value
    return rows


REFUSALS = [
    ("model", {"model": np.array("another-model:1")}, ModelMismatchError,
     "holds embeddings of the model 'another-model:1' (24-dim), but this bank's model is 'fake-spectrum-24:0'"),
    ("dimension", {"dimension": np.array(12), "embeddings": np.ones((5, 12))}, ModelMismatchError,
     "(12-dim), but this bank's model is 'fake-spectrum-24:0' (24-dim)"),
    ("width", {"embeddings": np.ones((5, 12))}, InvalidInputError,
     "embeddings must be a (utterances, 24) array of floats, as dimension says; this one is float64 of shape (5, 12)"),
    ("integers", {"embeddings": np.ones((5, DIM), dtype=np.int64)}, InvalidInputError, "this one is int64"),
    ("nan", {"embeddings": _rows(r2=np.nan, r4=np.nan)}, InvalidInputError,
     "embeddings row 2 (names[1], 'bob') holds NaN, infinity or only zeros (and 1 other rows)"),
    ("inf", {"embeddings": _rows(r1=np.inf)}, InvalidInputError, "embeddings row 1 (names[0], 'alice') holds NaN"),
    ("too large for float32", {"embeddings": _rows(r4=1e39)}, InvalidInputError, "row 4 (names[2], 'carol') holds NaN"),
    ("zeros", {"embeddings": _rows(r3=0.0)}, InvalidInputError,
     "embeddings row 3 (names[1], 'bob') holds NaN, infinity or only zeros"),
    ("empty name", {"names": np.array(["alice", " ", "carol"])}, InvalidInputError,
     "names[1] (' '): a speaker name must not be empty"),
    ("control character", {"names": np.array(["alice", "bo\x07b", "carol"])}, InvalidInputError,
     "names[1] ('bo\\x07b'): a speaker name must not contain control or invisible formatting characters"),
    ("twice", {"names": np.array(["alice", "bob", "alice"])}, InvalidInputError,
     "names[2] ('alice') is names[0] ('alice')"),
    ("twice, spelled apart", {"names": np.array(["\u00e9lise", "bob", "e\u0301lise"])}, InvalidInputError,
     "names[2] ('\u00e9lise') is names[0] ('\u00e9lise')"),
    ("look-alike", {"names": np.array(["alice", "bob", "\u0430lice"])}, InvalidInputError,
     "names[2] ('\u0430lice') looks like names[0] ('alice')"),
    ("no embeddings", {"speaker": np.array([0, 0, 2, 2, 2])}, InvalidInputError,
     "names[1] ('bob') has no embeddings (no entry of speaker is 1): give each speaker at least one, or leave the name "
     "out"),
    ("out of range", {"speaker": np.array([0, 0, 1, 2, 3])}, InvalidInputError,
     "speaker[4] is 3, but names has 3 entries (0 to 2)"),
    ("unsorted", {"speaker": np.array([0, 1, 0, 1, 2])}, InvalidInputError,
     ("speaker must be non-decreasing (each speaker's embeddings together, in the order of names): speaker[2] is 0 "
      "after 1. Sort them: order = np.argsort(speaker, kind='stable')")),
    ("one short", {"speaker": np.array([0, 0, 1, 2])}, InvalidInputError,
     "speaker must be integers, one per embedding (5); found int64 of shape (4,)"),
    ("missing", {"speaker": None}, InvalidInputError,
     "lacks speaker: the file needs the arrays model, dimension, names, speaker, embeddings (metadata is optional)"),
    ("unknown", {"labels": np.array(["x"])}, InvalidInputError, "holds arrays voicebank does not know (labels)"),
    ("pickled", {"names": np.array(["alice", "bob", "carol"], dtype=object)}, InvalidInputError,
     "names is stored as Python objects (pickled), which voicebank never loads"),
    ("names not text", {"names": np.array([1, 2, 3])}, InvalidInputError, "names must be a non-empty 1-D text array"),
    ("model not text", {"model": np.array(3)}, InvalidInputError, "model must be text"),
    ("metadata not JSON", {"metadata": np.array(["", "{oops", ""])}, InvalidInputError,
     "metadata[1] ('bob'): not JSON (Expecting property name"),
    ("metadata not an object", {"metadata": np.array(["", "", "[1, 2]"])}, InvalidInputError,
     "metadata[2] ('carol'): metadata must be a mapping of names to values, not list"),
    ("metadata too short", {"metadata": np.array(["", ""])}, InvalidInputError,
     "metadata must be text, one JSON object per name (3); found <U1 of shape (2,)"),
]


@pytest.mark.parametrize("change, error, words", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_bad_file_is_refused_in_one_line_and_stores_nothing(bank, db_path, tmp_path, change, error, words):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays(bank.model_id, **change))
    before = table_dump(db_path)
    with pytest.raises(error) as refused:
        bank.bulk.import_embeddings(path)
    message = str(refused.value)
    assert words in message and message.startswith(f"{path}") and message.endswith("Nothing was imported.")
    assert "\n" not in message
    assert table_dump(db_path) == before
    assert "\n" not in message and ".." not in message


def test_a_file_that_is_not_an_archive_or_is_cut_short_is_refused(bank, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("name,file\n")
    with pytest.raises(InvalidInputError, match=r"notes.npz: not a readable .npz file \(File is not a zip file\)"):
        bank.bulk.import_embeddings(text)
    good = tmp_path / "good.npz"
    np.savez_compressed(good, **arrays(bank.model_id))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InvalidInputError, match="cut.npz: not a readable .npz file"):
        bank.bulk.import_embeddings(cut)
    assert len(bank) == 0
    assert bank.bulk.import_embeddings(good).enrolled == 3  # compressed archives are read too


def _npy_header(descr: str, shape: tuple) -> bytes:
    """A .npy header declaring ``shape`` of ``descr``, to follow with as little data as one likes."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def _archive(path: Path, members: dict[str, bytes | np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, value in members.items():
            if isinstance(value, np.ndarray):
                with archive.open(f"{key}.npy", "w") as member:
                    np.save(member, value)
            else:
                archive.writestr(f"{key}.npy", value)
    return path


HOSTILE = [  # what the header declares is checked against the archive's directory before anything is read
    ("speaker declared huge", {"speaker": _npy_header("<i8", (10**12,))}, "speaker declares (1000000000000,) of int64"),
    ("speaker declared negative", {"speaker": _npy_header("<i8", (-5,))}, "speaker declares (-5,) of int64"),
    ("speaker shape overflows", {"speaker": _npy_header("<i8", (2**40, 2**40))}, "speaker declares (1099511627776,"),
    ("a huge name", {"names": np.array(["a" * 100_000, "bob", "carol"])},
     "names holds items of 400000 bytes (<U100000); at most 4096 are read"),
    ("huge metadata", {"metadata": np.array(["{}", "", "x" * 100_000])}, "metadata holds text of up to 100000 characters"),
    ("a long model", {"model": np.array("m" * 100_000)}, "model holds items of 400000 bytes"),
    ("zip bomb", {"speaker": _npy_header("<i8", (1 << 20,)) + bytes(8 << 20)},  # 8 MiB of zeros, 8 KiB deflated
     "speaker declares (1048576,) of int64, more than the file holds or than one per embedding"),
    ("embeddings bomb", {"embeddings": _npy_header("<f4", (100_000, DIM)) + bytes(100_000 * DIM * 4)},
     "embeddings inflates from"),
]


@pytest.mark.parametrize("members, words", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_archive_is_refused_unread(bank, db_path, tmp_path, members, words):
    good = arrays(bank.model_id)
    path = _archive(tmp_path / "hostile.npz", {**good, **members})
    before = table_dump(db_path)
    with pytest.raises(InvalidInputError) as refused:
        bank.bulk.import_embeddings(path)
    assert words in str(refused.value) and len(str(refused.value)) < 400, str(refused.value)[:400]
    assert table_dump(db_path) == before


def test_a_fifo_or_a_device_is_refused_not_read(bank, tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    zero = tmp_path / "zero.npz"
    zero.symlink_to("/dev/zero")  # reading it would never end
    for path in (fifo, zero):
        with pytest.raises(InvalidInputError, match="is not a regular file"):
            bank.bulk.import_embeddings(path)
    assert len(bank) == 0


def test_a_file_changed_after_its_check_is_refused_when_read_again(bank, tmp_path):
    path, _, rows = staff(tmp_path / "staff.npz", bank, names=[f"p{k}" for k in range(6)], per=1)
    checked = bank.bulk.read(path)
    rows[4] = np.nan
    write(path, bank.model_id, [f"p{k}" for k in range(6)], np.arange(6), rows)
    with pytest.raises(InvalidInputError, match="changed since it was checked"):
        bank.bulk.import_embeddings(checked, batch_size=2)
    assert len(bank) == 0  # the file is read a block (4096 rows) at a time: the bad one came with the first


def test_the_batch_size_is_a_positive_whole_number(bank, tmp_path):
    path = staff(tmp_path / "staff.npz", bank)[0]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidInputError, match="the batch size is a whole number of speakers, at least 1"):
            bank.bulk.import_embeddings(path, batch_size=bad)


def test_the_file_is_read_a_block_at_a_time(bank, tmp_path):
    """The reader asks the archive for at most one block of rows at a time, whatever the file's size."""
    path, _, rows = staff(tmp_path / "staff.npz", bank, names=[f"p{k}" for k in range(50)], per=3)
    opened = EmbeddingsFile(path)  # names and speaker are read whole: bytes per person, not per number
    opened.check()
    reads: list[int] = []
    original = zipfile.ZipExtFile.read

    def read(self, n=-1):
        reads.append(n)
        return original(self, n)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zipfile.ZipExtFile, "read", read)
        found = list(opened.speakers(block_rows=8))
    assert len(found) == 50 and max(reads) <= 8 * DIM * 4 and -1 not in reads
    assert np.allclose(np.concatenate([s.embeddings for s in found]), l2_normalize(rows), atol=1e-6)


# -- the command ------------------------------------------------------------------------------------

def test_cli_import_of_embeddings(tmp_path, model, voices):
    from voicebank.cli import main

    db = tmp_path / "x.db"

    def cli(*args):
        return CliRunner().invoke(main, ["--db", str(db), "--model", model, *map(str, args)])

    assert cli("init", "--threshold", TINY_THRESHOLD).exit_code == 0
    with VoiceBank.open(db) as bank:
        bank.enroll("alice", voices["alice"][:2])
        bank.enroll("dave", voices["dave"][:2])
        path = staff(tmp_path / "staff.npz", bank, names=("\u0430lice", "bob", "carol", "dave"))[0]
        model_id = bank.model_id
    first = cli("import", path, "--batch-size", 2)
    assert first.exit_code == 2
    assert first.stdout.splitlines()[0].startswith(
        "Enrolled 2 speakers from staff.npz, skipped 1 already enrolled, 1 failed (")
    assert first.stdout.splitlines()[1].startswith("  \u0430lice failed: '\u0430lice' looks like the enrolled 'alice'")
    assert first.stderr == ("Error: 1 of 4 speakers failed and were not stored; rename them in the file and run the "
                            "same import again (enrolled speakers are skipped).\n")
    second = cli("import", path, "--json")
    assert second.exit_code == 2
    report = json.loads(second.stdout)
    assert {k: report[k] for k in ("model", "speakers", "embeddings", "enrolled", "skipped", "failed", "batches")} == {
        "model": model_id, "speakers": 4, "embeddings": 12, "enrolled": 0, "skipped": 3, "failed": 1, "batches": 0}
    assert cli("import", path, "--strict").stderr == (
        "Error: --strict and --allow-inconsistent are checks of recordings; a file of embeddings is stored as given.\n")
    np.savez(tmp_path / "bad.npz", **arrays(model_id, speaker=np.array([0, 1, 0, 1, 2])))
    bad = cli("import", tmp_path / "bad.npz")
    assert bad.exit_code == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith(f"Error: {tmp_path / 'bad.npz'}: speaker must be non-decreasing")


def test_cli_import_help_shows_the_file_layout():
    from voicebank.cli import main

    text = CliRunner().invoke(main, ["import", "--help"]).stdout
    assert "voicebank import staff.npz" in text and "--batch-size" in text
    assert "non-decreasing" in text and "model_id" in text


# -- SIGKILL in the middle of an import, then the same import again ------------------------------------

CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import conftest  # noqa: F401  (switches the hub off, as the other worker processes do)
from voicebank.store import repository_bulk
point, nth = sys.argv[1], int(sys.argv[2])
calls = {{"n": 0}}
if point == "mid-batch":  # every row of the nth batch sent, COMMIT not
    inner = repository_bulk._insert
    def hooked(*args):
        inner(*args)
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    repository_bulk._insert = hooked
else:  # the nth batch committed, the index not yet caught up
    from voicebank import bulk
    inner = bulk.add_speakers
    def hooked(*args):
        done = inner(*args)
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return done
    bulk.add_speakers = hooked
from voicebank.cli import main
main(sys.argv[3:])
"""


@pytest.mark.embedder("tiny")  # another process cannot load the fake
@pytest.mark.parametrize("point, stored", [("mid-batch", 20), ("between-batches", 30)])
def test_an_import_killed_with_sigkill_resumes_with_everyone_once(db_url, model, tmp_path, point, stored):
    names = [f"person {k:03d}" for k in range(60)]
    with VoiceBank.open(db_url, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        centers, rows, speaker = people(60, 2, seed=3)
        path = write(tmp_path / "staff.npz", bank.model_id, names, speaker, rows)
    argv = ["--db", db_url, "import", str(path), "--batch-size", "10"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(REPO / "tests")), point, "3", *argv],
                           capture_output=True, text=True, timeout=600, check=False, env=env)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert sorted(speaker_rows(db_url)) == [(name, 1) for name in names[:stored]]  # whole batches, in order

    from voicebank.cli import main

    resumed = CliRunner().invoke(main, [*argv, "--json"])
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert (report["enrolled"], report["skipped"], report["failed"]) == (60 - stored, stored, 0)
    assert sorted(speaker_rows(db_url)) == [(name, 1) for name in names]
    with VoiceBank.open(db_url) as bank:
        assert sum(len(s.recordings) for s in bank.speakers()) == 120
        assert bank.index.check().ok
        found = bank.identify_embeddings(centers, top_k=1)
        assert [r.match.name if r.match else None for r in found] == names


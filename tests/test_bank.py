"""The VoiceBank facade end to end: the fake embedder (conftest; the bank's logic does not depend on
the model), a real SQLite file, a real FAISS index file and real WAV files. Speakers are enrolled
from recordings [0, 1] and probed with [2]."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY_THRESHOLD, VOICES, table_dump
from voicebank import VoiceBank
from voicebank.errors import (
    AudioError,
    BankNotFoundError,
    DuplicateRecordingError,
    DuplicateSpeakerError,
    EmptyBankError,
    InvalidInputError,
    ModelMismatchError,
    SpeakerNotFoundError,
)
from voicebank.results import Identification, Verification

pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]

THREE = ("alice", "bob", "carol")


def enroll_all(bank, voices, names=THREE):
    for name in names:
        bank.enroll(name, voices[name][:2], metadata={"team": name.upper(), "level": len(name)})
    return bank


@pytest.fixture
def enrolled(bank, voices):
    return enroll_all(bank, voices)


def faiss_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".faiss")


def query(db_path: Path, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(db_path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def audit_rows(db_path: Path) -> list[dict]:
    con = sqlite3.connect(db_path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("select * from audit order by id")]
    finally:
        con.close()


def model_id_of(db_path: Path) -> str:
    return query(db_path, "select model_id from bank where id = 1")[0][0]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# -- the happy path -------------------------------------------------------------------------------

def test_identify_each_enrolled_speaker_from_a_held_out_recording(enrolled, voices):
    for name in THREE:
        result = enrolled.identify(voices[name][2])
        assert isinstance(result, Identification)
        assert result.match is not None and result.match.name == name
        assert result.candidates[0].name == name
        assert result.candidates[0] == result.match
        assert result.match.score >= TINY_THRESHOLD
        assert sorted(c.name for c in result.candidates) == sorted(THREE)
        scores = [c.score for c in result.candidates]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= s <= 1.0 + 1e-6 for s in scores)
        assert result.threshold == pytest.approx(TINY_THRESHOLD)


def test_stranger_is_rejected_but_candidates_are_listed(enrolled, voices):
    result = enrolled.identify(voices["stranger"][2])
    assert result.match is None
    assert sorted(c.name for c in result.candidates) == sorted(THREE)
    assert result.candidates[0].score < TINY_THRESHOLD
    assert result.to_dict()["match"] is None


def test_verify_accepts_the_speaker_and_rejects_others(enrolled, voices):
    accepted = enrolled.verify("alice", voices["alice"][2])
    assert isinstance(accepted, Verification)
    assert (accepted.name, accepted.accepted) == ("alice", True)
    assert accepted.score >= TINY_THRESHOLD
    assert accepted.threshold == pytest.approx(TINY_THRESHOLD)

    for impostor in ("bob", "stranger"):
        rejected = enrolled.verify("alice", voices[impostor][2])
        assert (rejected.name, rejected.accepted) == ("alice", False)
        assert rejected.score < TINY_THRESHOLD < accepted.score


def test_top_k(bank, voices):
    enroll_all(bank, voices, names=tuple(VOICES))
    probe = voices["carol"][2]
    assert [c.name for c in bank.identify(probe, top_k=1).candidates] == ["carol"]
    two = bank.identify(probe, top_k=2)
    assert len(two.candidates) == 2 and two.candidates[0].name == "carol"
    everyone = bank.identify(probe, top_k=10)
    assert sorted(c.name for c in everyone.candidates) == sorted(VOICES)
    assert everyone.candidates[:2] == two.candidates
    before = table_dump(bank_db(bank))
    for bad in (0, -1, 1001, 2.5, True, "3"):
        with pytest.raises(InvalidInputError, match="top-k is a whole number from 1 to 1000"):
            bank.identify(probe, top_k=bad)
    assert table_dump(bank_db(bank)) == before


def bank_db(bank) -> Path:
    from voicebank.store import sqlite_path

    return sqlite_path(bank._store.url)


def test_speakers_and_speaker_contents(enrolled, voices):
    assert [s.name for s in enrolled.speakers()] == list(THREE)
    assert len(enrolled) == 3
    alice = enrolled.speaker("alice")
    assert alice.name == "alice"
    assert alice.metadata == {"team": "ALICE", "level": 5}
    assert [r.label for r in alice.recordings] == [str(p) for p in voices["alice"][:2]]
    assert [r.sha256 for r in alice.recordings] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in voices["alice"][:2]]
    for r, path in zip(alice.recordings, voices["alice"][:2]):
        assert r.duration_s == pytest.approx(sf.info(str(path)).duration, abs=1e-3)
        assert r.duration_s == pytest.approx(2.5, abs=1e-3)
        assert 1.0 <= r.speech_s <= r.duration_s + 1e-6
    assert alice.speech_seconds == pytest.approx(sum(r.speech_s for r in alice.recordings))
    as_dict = alice.to_dict()
    assert set(as_dict) == {"name", "metadata", "recordings", "speech_s", "created_at", "updated_at", "warnings"}
    json.dumps(as_dict)  # JSON-able
    with pytest.raises(SpeakerNotFoundError, match="no speaker named 'zed' is enrolled"):
        enrolled.speaker("zed")


def test_add_recordings_changes_the_voiceprint_and_count(enrolled, voices, db_path):
    def voiceprint():
        blob = query(db_path, "select voiceprint from speakers where name = 'alice'")[0][0]
        return np.frombuffer(blob, dtype=np.float32)

    before = voiceprint()
    speaker = enrolled.add_recordings("alice", [voices["alice"][2]])
    assert len(speaker.recordings) == 3
    assert speaker.recordings[2].label == str(voices["alice"][2])
    assert speaker.updated_at >= speaker.created_at
    after = voiceprint()
    assert not np.allclose(before, after, atol=1e-7)
    # The voiceprint is the normalized mean of the normalized utterance embeddings, all three of them.
    rows = query(db_path, "select u.embedding from utterances u join speakers s on s.id = u.speaker_id "
                          "where s.name = 'alice' order by u.id")
    embeddings = np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows])
    assert embeddings.shape == (3, enrolled.dimension)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.allclose(after, unit(embeddings.mean(axis=0)), atol=1e-5)
    # ... and the stored embedding of a recording is the one the bank computes for it now.
    assert float(embeddings[2] @ enrolled.embed(voices["alice"][2])) >= 0.999
    # The index follows the new voiceprint.
    assert enrolled.index.check().ok
    assert enrolled.identify(voices["alice"][1]).match.name == "alice"


def test_remove(enrolled, voices, db_path):
    enrolled.identify(voices["bob"][2])  # the index is loaded before the removal
    enrolled.remove("bob")
    assert [s.name for s in enrolled.speakers()] == ["alice", "carol"]
    result = enrolled.identify(voices["bob"][2])
    assert "bob" not in [c.name for c in result.candidates]
    assert result.match is None or result.match.name != "bob"
    with pytest.raises(SpeakerNotFoundError, match="no speaker named 'bob'"):
        enrolled.verify("bob", voices["bob"][2])
    with pytest.raises(SpeakerNotFoundError):
        enrolled.speaker("bob")
    # Every embedding of the voice is gone from SQL too.
    assert query(db_path, "select count(*) from utterances")[0][0] == 4
    assert query(db_path, "select count(*) from speakers where name = 'bob'")[0][0] == 0
    assert enrolled.index.check().ok


def test_recordings_as_bytes_file_object_and_array(bank, voices):
    d0, d1, d2 = voices["dave"]
    with open(d1, "rb") as handle:
        speaker = bank.enroll("dave", [d0.read_bytes(), handle])
    assert speaker.recordings[0].label == f"<{d0.stat().st_size} bytes>"
    assert speaker.recordings[1].label == str(d1)  # a file object is labelled by its name
    assert speaker.recordings[0].sha256 == hashlib.sha256(d0.read_bytes()).hexdigest()
    bank.enroll("alice", voices["alice"][:2])

    samples, rate = sf.read(str(d2), dtype="float32")
    assert bank.identify((samples, rate)).match.name == "dave"
    assert bank.identify(io.BytesIO(d2.read_bytes())).match.name == "dave"
    assert bank.verify("dave", d2.read_bytes()).accepted
    assert not bank.verify("dave", (sf.read(str(voices["alice"][2]), dtype="float32")[0], rate)).accepted
    # An array at another sample rate is resampled to the model's.
    import librosa

    resampled = librosa.resample(samples, orig_sr=rate, target_sr=22_050)
    assert bank.identify((resampled, 22_050)).match.name == "dave"


def test_context_manager_saves_the_index_and_a_reopened_bank_sees_the_same(db_path, model, voices):
    with VoiceBank.open(db_path, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        assert isinstance(bank, VoiceBank)
        enroll_all(bank, voices)
        assert bank.identify(voices["carol"][2]).match.name == "carol"
        first = [(s.name, s.metadata, s.recordings) for s in bank.speakers()]
    sidecar = json.loads(faiss_path(db_path).with_name(db_path.name + ".faiss.json").read_text())
    assert sidecar["seq"] == query(db_path, "select change_seq from bank")[0][0]
    assert sidecar["count"] == 3

    # Without a model: the bank's own is used.
    with VoiceBank.open(db_path) as again:
        assert [(s.name, s.metadata, s.recordings) for s in again.speakers()] == first
        assert again.thresholds.verify == pytest.approx(TINY_THRESHOLD)
        assert again.identify(voices["bob"][2]).match.name == "bob"
        assert again.index.check().index_file == "ok"


def test_reopening_from_another_voicebank_sees_the_same_speakers(enrolled, db_path, model, voices):
    with VoiceBank.open(db_path, str(model)) as other:
        assert [s.name for s in other.speakers()] == list(THREE)
        assert other.speaker("bob").metadata == {"team": "BOB", "level": 3}
        assert other.identify(voices["alice"][2]).match.name == "alice"
        assert other.verify("carol", voices["carol"][2]).accepted


def test_audit_row_per_identify_and_verify(enrolled, voices, db_path):
    assert audit_rows(db_path) == []
    model_id = model_id_of(db_path)
    hit = enrolled.identify(voices["alice"][2], client="desk-1")
    miss = enrolled.identify(voices["stranger"][2])
    yes = enrolled.verify("bob", voices["bob"][2])
    no = enrolled.verify("bob", voices["carol"][2])
    rows = audit_rows(db_path)
    assert len(rows) == 4
    expected = [
        ("identify", None, "alice", hit.match.score, True, voices["alice"][2], "desk-1"),
        ("identify", None, None, miss.candidates[0].score, False, voices["stranger"][2], None),
        ("verify", "bob", "bob", yes.score, True, voices["bob"][2], None),
        ("verify", "bob", None, no.score, False, voices["carol"][2], None),
    ]
    for row, (operation, claimed, returned, score, accepted, path, client) in zip(rows, expected):
        assert row["operation"] == operation
        assert row["claimed"] == claimed
        assert row["returned"] == returned
        assert row["score"] == pytest.approx(score, abs=1e-6)
        assert row["threshold"] == pytest.approx(TINY_THRESHOLD)
        assert row["score_kind"] == "cosine"
        assert bool(row["accepted"]) is accepted
        assert row["model_id"] == model_id and model_id
        assert row["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row["client"] == client
        assert row["at"]
    # Listing and reading are not decisions: no audit rows.
    enrolled.speakers()
    enrolled.speaker("alice")
    assert len(audit_rows(db_path)) == 4


def test_set_threshold(enrolled, voices, db_path):
    before = table_dump(db_path)
    for bad, words in [(1.5, "between -1 and 1"), (-1.01, "between -1 and 1"), (float("nan"), "between -1 and 1"),
                       (float("inf"), "between -1 and 1"), ("abc", "a threshold is a number"),
                       (None, "a threshold is a number")]:
        with pytest.raises(InvalidInputError, match=words):
            enrolled.thresholds.set(bad)
    assert table_dump(db_path) == before
    assert enrolled.thresholds.verify == pytest.approx(TINY_THRESHOLD)

    enrolled.thresholds.set(0.5)
    assert enrolled.thresholds.verify == 0.5
    assert query(db_path, "select threshold from bank")[0][0] == 0.5
    # The stored threshold is what decisions use: at 0.5 the stranger is taken for someone.
    result = enrolled.identify(voices["stranger"][2])
    assert result.threshold == 0.5 and result.match is not None
    for edge in (-1, 1):
        enrolled.thresholds.set(edge)
        assert enrolled.thresholds.verify == float(edge)


def test_threads_share_one_bank(bank, voices, db_path):
    enroll_all(bank, voices, names=tuple(VOICES))
    barrier = threading.Barrier(4)
    results: dict[int, list[tuple[str, str | None]]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            out = []
            for i in range(4):
                name = list(VOICES)[(k + i) % 4]
                out.append((name, bank.identify(voices[name][2]).match.name))
            out.append(("stranger", bank.identify(voices["stranger"][2]).match))
            results[k] = out
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(results) == [0, 1, 2, 3]
    for out in results.values():
        assert [expected for expected, _ in out[:4]] == [got for _, got in out[:4]]
        assert out[4] == ("stranger", None)
    assert len(audit_rows(db_path)) == 20


# -- bad input: the right error, a helpful message, and nothing changed ----------------------------

@pytest.fixture
def unchanged(db_path):
    """Call with a function; asserts that the database is the same after it as before."""

    def check(action):
        before = table_dump(db_path)
        try:
            action()
        finally:
            assert table_dump(db_path) == before

    return check


def test_unknown_speaker(enrolled, voices, unchanged):
    message = "no speaker named 'zed' is enrolled (`voicebank list` shows who is)."
    for action in (lambda: enrolled.verify("zed", voices["alice"][2]),
                   lambda: enrolled.remove("zed"),
                   lambda: enrolled.add_recordings("zed", [voices["alice"][2]])):
        with pytest.raises(SpeakerNotFoundError) as info:
            unchanged(action)
        assert str(info.value) == message


def test_duplicate_name(enrolled, voices, unchanged):
    with pytest.raises(DuplicateSpeakerError) as info:
        unchanged(lambda: enrolled.enroll("alice", [voices["dave"][0]]))
    assert "'alice' is already enrolled" in str(info.value)
    assert "choose another name" in str(info.value)
    # Names are trimmed and NFC-normalized before the comparison.
    with pytest.raises(DuplicateSpeakerError):
        unchanged(lambda: enrolled.enroll("  alice ", [voices["dave"][0]]))
    assert [r.label for r in enrolled.speaker("alice").recordings] == [str(p) for p in voices["alice"][:2]]


def test_same_recording_twice_in_one_enroll(bank, voices, unchanged):
    d0 = voices["dave"][0]
    with pytest.raises(DuplicateRecordingError) as info:
        unchanged(lambda: bank.enroll("dave", [d0, voices["dave"][1], d0]))
    assert f"{d0} is the same recording as {d0}; give each once." == str(info.value)
    # The same bytes given another way are the same recording.
    with pytest.raises(DuplicateRecordingError, match="give each once"):
        unchanged(lambda: bank.enroll("dave", [d0, d0.read_bytes()]))
    assert len(bank) == 0


def test_add_an_already_enrolled_recording(enrolled, voices, unchanged):
    a0 = voices["alice"][0]
    with pytest.raises(DuplicateRecordingError) as info:
        unchanged(lambda: enrolled.add_recordings("alice", [voices["alice"][2], a0.read_bytes()]))
    message = str(info.value)
    assert "is already enrolled for alice" in message and str(a0) in message
    assert "nothing was added" in message
    assert len(enrolled.speaker("alice").recordings) == 2


def test_cheap_refusals_come_before_any_audio_is_embedded(db_path, voices, corrupt, tmp_path):
    """A look-alike name, a file already enrolled or given twice, the same audio in another file, or
    an unusable recording is known without the model: it is refused before anything is embedded
    (15-28 s of a busy machine for a few recordings)."""
    from conftest import FakeEmbedder

    from voicebank.results import FAILED, Enrollment

    class Counting(FakeEmbedder):
        calls = 0

        def embed(self, waveforms):
            Counting.calls += 1
            return super().embed(waveforms)

    a, b, d = voices["alice"], voices["bob"], voices["dave"]
    samples, rate = sf.read(a[0], dtype="int16")
    sf.write(tmp_path / "a0.flac", samples, rate)  # alice's first recording, as another file
    with VoiceBank.open(db_path, Counting(), create=True, threshold=TINY_THRESHOLD) as bank:
        bank.enroll("alice", a[:2])
        assert Counting.calls > 0  # the embedder counted is the one the bank uses
        Counting.calls = 0
        refused = [(lambda: bank.enroll("\u0430lice", b), DuplicateSpeakerError, "looks like the enrolled 'alice'"),
                   (lambda: bank.enroll("bob", [b[0], a[0]]), DuplicateRecordingError, "already enrolled for alice"),
                   (lambda: bank.enroll("bob", [b[0], b[1], b[0]]), DuplicateRecordingError, "give each once"),
                   (lambda: bank.add_recordings("alice", [a[2], a[1]]), DuplicateRecordingError, "nothing was added"),
                   (lambda: bank.enroll("bob", [b[0], tmp_path / "a0.flac"]), DuplicateRecordingError,
                    "a0.flac is already enrolled for alice"),
                   (lambda: bank.add_recordings("alice", [tmp_path / "a0.flac"]), DuplicateRecordingError,
                    "a0.flac is already enrolled for alice"),
                   (lambda: bank.enroll("bob", [b[0], b[1], corrupt]), AudioError, "corrupt")]
        for action, error, words in refused:
            with pytest.raises(error, match=words):
                action()
        outcomes = bank.enroll_many([Enrollment("\u0430lice", b), Enrollment("dave", [d[0], a[1]])])
        assert [o.status for o in outcomes] == [FAILED, FAILED]
        assert "looks like the enrolled 'alice'" in outcomes[0].message
        assert "already enrolled for alice" in outcomes[1].message
        assert Counting.calls == 0
        assert [s.name for s in bank.speakers()] == ["alice"]


def test_empty_recordings(enrolled, unchanged):
    for action in (lambda: enrolled.enroll("eve", []), lambda: enrolled.add_recordings("alice", [])):
        with pytest.raises(InvalidInputError, match="no recordings were given: give at least one"):
            unchanged(action)
    for bare in ("alice0.wav", b"RIFF", (np.zeros(16_000, np.float32), 16_000)):
        with pytest.raises(InvalidInputError, match="recordings must be a list of recordings"):
            unchanged(lambda: enrolled.enroll("eve", bare))


def test_recordings_as_a_tuple_of_paths(bank, voices):
    assert len(bank.enroll("dave", tuple(voices["dave"][:2])).recordings) == 2


INVALID_NAMES = [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("x" * 10_000, "at most 200 characters; this one has 10000"),
    ("al\x00ice", "must not contain control"),
    ("al\nice", "must not contain control"),
    ("al\x1bice", "must not contain control"),
    ("al\u200bice", "invisible formatting"),
    (None, "must be text, not NoneType"),
]


def test_invalid_names(enrolled, voices, unchanged):
    for name, words in INVALID_NAMES:
        actions = (lambda: enrolled.enroll(name, voices["dave"][:2]),
                   lambda: enrolled.verify(name, voices["alice"][2]),
                   lambda: enrolled.remove(name),
                   lambda: enrolled.add_recordings(name, [voices["dave"][0]]),
                   lambda: enrolled.speaker(name))
        for action in actions:
            with pytest.raises(InvalidInputError, match=words):
                unchanged(action)


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({"when": object()}, "metadata must be plain JSON"),
        ({"tags": {1, 2}}, "metadata must be plain JSON"),
        ({"x": float("nan")}, "must be finite"),
        ({1: "one"}, "metadata keys must be text"),
        (["not", "a", "mapping"], "metadata must be a mapping"),
        ({"blob": "x" * 20_000}, "metadata is at most 16 KiB as JSON"),
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}, "nested more than 8 levels deep"),
    ],
)
def test_invalid_metadata(bank, voices, unchanged, metadata, words):
    with pytest.raises(InvalidInputError, match=words):
        unchanged(lambda: bank.enroll("dave", voices["dave"][:2], metadata=metadata))
    assert len(bank) == 0


def test_metadata_at_the_limits_is_kept(bank, voices):
    deep = {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}  # the leaf is at level 8, counting the top
    meta = {"deep": deep, "list": [1, 2.5, True, None, "x"], "unicode": "Zoë ☃"}
    bank.enroll("dave", voices["dave"][:2], metadata=meta)
    assert bank.speaker("dave").metadata == meta


def test_one_corrupt_file_among_good_ones_stores_nothing(bank, voices, unchanged, corrupt, tmp_path):
    with pytest.raises(AudioError) as info:
        unchanged(lambda: bank.enroll("dave", [voices["dave"][0], corrupt, voices["dave"][1]]))
    assert str(corrupt) in str(info.value)
    assert "not a readable audio file" in str(info.value)
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="no such file"):
        unchanged(lambda: bank.enroll("dave", [voices["dave"][0], missing]))
    with pytest.raises(SpeakerNotFoundError):
        bank.speaker("dave")
    assert len(bank) == 0 and bank.speakers() == []


def test_wrong_model_for_the_bank(enrolled, db_path, model, other_model, voices, unchanged):
    with VoiceBank.open(db_path, str(other_model)) as wrong:
        for action in (lambda: wrong.identify(voices["alice"][2]),
                       lambda: wrong.verify("alice", voices["alice"][2]),
                       lambda: wrong.enroll("dave", voices["dave"][:2]),
                       lambda: wrong.add_recordings("alice", [voices["alice"][2]])):
            with pytest.raises(ModelMismatchError) as info:
                unchanged(action)
            message = str(info.value)
            assert str(model) in message and str(other_model) in message
            assert model_id_of(db_path) in message
            assert "create a new bank" in message
        # Reading does not need the model.
        assert [s.name for s in wrong.speakers()] == list(THREE)


def test_identify_on_an_empty_bank(bank, voices, unchanged):
    with pytest.raises(EmptyBankError) as info:
        unchanged(lambda: bank.identify(voices["alice"][2]))
    assert "no speakers yet" in str(info.value) and "voicebank enroll" in str(info.value)


def test_opening_a_missing_sqlite_file_creates_nothing(tmp_path, model):
    missing = tmp_path / "nobank.db"
    with pytest.raises(BankNotFoundError) as info:
        VoiceBank.open(missing, str(model))
    assert str(missing) in str(info.value) and "voicebank init" in str(info.value)
    assert list(tmp_path.iterdir()) == []


# -- the FAISS index: a rebuildable cache of SQL ---------------------------------------------------

def test_damaged_index_file_is_rebuilt(enrolled, db_path, model, voices):
    assert enrolled.identify(voices["alice"][2]).match.name == "alice"
    enrolled.close()
    assert faiss_path(db_path).exists()

    faiss_path(db_path).write_bytes(b"this is not a FAISS index" * 100)
    with VoiceBank.open(db_path, str(model)) as bank:
        for name in THREE:
            assert bank.identify(voices[name][2]).match.name == name
        assert bank.identify(voices["stranger"][2]).match is None

    faiss_path(db_path).write_bytes(b"\x00" * 4096)
    with VoiceBank.open(db_path, str(model)) as bank:
        report = bank.index.check()
        assert report.index_file.startswith("damaged or foreign, rebuilt")
        assert report.ok
        assert (report.speakers_in_sql, report.speakers_in_index) == (3, 3)
        assert bank.index.check().index_file == "ok"  # the rebuilt index was written back
        assert bank.identify(voices["bob"][2]).match.name == "bob"


def test_deleted_index_file_is_rebuilt(enrolled, db_path, model, voices):
    enrolled.identify(voices["alice"][2])
    enrolled.close()
    faiss_path(db_path).unlink()
    with VoiceBank.open(db_path, str(model)) as bank:
        report = bank.index.check()
        assert report.index_file == "missing, rebuilt" and report.ok
        assert faiss_path(db_path).exists()
        assert bank.identify(voices["carol"][2]).match.name == "carol"
    faiss_path(db_path).unlink()
    faiss_path(db_path).with_name(db_path.name + ".faiss.json").unlink()
    with VoiceBank.open(db_path, str(model)) as bank:
        assert bank.identify(voices["carol"][2]).match.name == "carol"
        assert bank.index.check().index_file == "ok"


def test_check_in_the_same_bank_rewrites_a_damaged_or_deleted_index_file(enrolled, db_path, voices):
    """A bank that has already saved its index must still write the rebuilt one back to disk."""
    enrolled.identify(voices["alice"][2])
    enrolled.index.save()
    faiss_path(db_path).write_bytes(b"garbage" * 100)
    assert enrolled.index.check().index_file.startswith("damaged or foreign, rebuilt")
    assert enrolled.index.check().index_file == "ok"

    faiss_path(db_path).unlink()
    assert enrolled.index.check().index_file == "missing, rebuilt"
    assert faiss_path(db_path).exists()

    faiss_path(db_path).write_bytes(b"garbage" * 100)
    assert enrolled.index.rebuild() == 3
    assert enrolled.index.check().index_file == "ok"


def test_an_index_file_replaced_by_a_link_or_a_fifo_is_rebuilt_from_sql(enrolled, db_path, voices):
    import os

    enrolled.index.save()
    for swap in (lambda p: p.symlink_to("/dev/zero"), lambda p: os.mkfifo(p)):
        faiss_path(db_path).unlink()
        swap(faiss_path(db_path))
        assert enrolled.index.check().index_file.startswith("damaged or foreign, rebuilt")
        assert faiss_path(db_path).is_file() and not faiss_path(db_path).is_symlink()  # the rebuilt one replaced it
        assert enrolled.identify(voices["alice"][2]).match.name == "alice"


def test_an_index_lock_held_by_another_process_costs_a_rebuild_not_a_hang(enrolled, db_path, voices, monkeypatch):
    """Another program holds the index file's lock (a `reindex` stopped with Ctrl-Z looks the same):
    the bank does not wait for it past the index file's deadline; it answers from an index built
    from SQL and kept in memory, and writes the file again once the lock is free."""
    import fcntl
    import time

    from voicebank.index import file as index_file

    monkeypatch.setattr(index_file, "LOCK_SECONDS", 0.3)
    enrolled.index.save()
    lock = faiss_path(db_path).with_name(faiss_path(db_path).name + ".lock")
    with open(lock, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a second open file: flock conflicts within one process too
        started = time.monotonic()
        assert enrolled.index.check().index_file.startswith("damaged or foreign, rebuilt")
        assert "held by another process" in enrolled.index.check().index_file
        assert enrolled.identify(voices["alice"][2]).match.name == "alice"
        enrolled.enroll("dave", voices["dave"][:2])
        assert time.monotonic() - started < 30  # each wait is the deadline's, not the holder's
    assert enrolled.identify(voices["dave"][2]).match.name == "dave"
    enrolled.index.save()
    assert enrolled.index.check().index_file == "ok"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds deleted open files through /proc (Linux)")
@pytest.mark.parametrize("companion", ["-wal", "-shm"])
def test_a_write_ahead_log_deleted_under_a_running_bank_refuses_writes_instead_of_losing_them(
        enrolled, db_path, voices, companion):
    from voicebank.errors import DatabaseGoneError

    assert enrolled.identify(voices["alice"][2]).match.name == "alice"  # the bank's connections hold both files
    Path(str(db_path) + companion).unlink()
    with pytest.raises(DatabaseGoneError, match=f"database's {companion} file was deleted.*Nothing was written"):
        enrolled.enroll("dave", voices["dave"][:2])
    with pytest.raises(DatabaseGoneError):
        enrolled.remove("alice")


def test_check_after_enroll_and_remove(bank, voices, db_path):
    report = bank.index.check()
    assert report.ok and (report.speakers_in_sql, report.speakers_in_index) == (0, 0)
    enroll_all(bank, voices)
    report = bank.index.check()
    assert report.ok and (report.speakers_in_sql, report.speakers_in_index) == (3, 3)
    assert (report.missing_from_index, report.not_in_sql, report.wrong_vectors) == ([], [], [])
    phone = report.telephone_index  # the telephone voiceprints' index is checked as well
    assert (phone["speakers_in_sql"], phone["speakers_in_index"], phone["missing_from_index"]) == (3, 3, [])
    bank.remove("bob")
    bank.add_recordings("carol", [voices["carol"][2]])
    report = bank.index.check()
    assert report.ok and (report.speakers_in_sql, report.speakers_in_index) == (2, 2)
    assert bank.index.rebuild() == 2
    assert bank.index.check().ok


def test_check_sees_a_telephone_index_that_disagrees_with_sql(enrolled, monkeypatch):
    telephone = enrolled._search.telephone
    ids, vectors, status = telephone.contents()
    monkeypatch.setattr(telephone, "contents", lambda: (ids[1:], vectors[1:] * -1, status))
    report = enrolled.index.check()
    assert not report.ok and report.missing_from_index == []
    assert len(report.telephone_index["missing_from_index"]) == 1 and len(report.telephone_index["wrong_vectors"]) == 2


def test_index_catches_up_across_two_banks_on_one_database(enrolled, db_path, model, voices):
    a = enrolled
    with VoiceBank.open(db_path, str(model)) as b:
        assert b.identify(voices["alice"][2]).match.name == "alice"  # b's index is loaded now
        assert b.identify(voices["dave"][2]).match is None

        a.enroll("dave", voices["dave"][:2])
        result = b.identify(voices["dave"][2])
        assert result.match is not None and result.match.name == "dave"
        assert b.index.check().ok

        a.remove("dave")
        result = b.identify(voices["dave"][2])
        assert result.match is None
        assert "dave" not in [c.name for c in result.candidates]
        a.add_recordings("alice", [voices["alice"][2]])
        assert b.index.check().ok and b.index.check().speakers_in_index == 3
        assert b.identify(voices["alice"][2]).match.name == "alice"


def test_many_changes_are_caught_up_in_chunks_and_a_mostly_changed_bank_is_rebuilt(
        db_path, model, voices, monkeypatch, caplog):
    from voicebank.index import faiss_search

    monkeypatch.setattr(faiss_search, "READ_CHUNK", 1)  # one changed speaker per SQL read
    with VoiceBank.open(db_path, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as a, \
            VoiceBank.open(db_path, str(model)) as b:
        enroll_all(a, voices, ("alice", "bob", "carol", "dave"))
        assert b.identify(voices["alice"][2]).match.name == "alice"  # b's index: 4 speakers
        a.remove("bob")
        a.add_recordings("carol", [voices["carol"][2]])
        with caplog.at_level("DEBUG", logger="voicebank.index.faiss_search"):
            assert b.identify(voices["carol"][2]).match.name == "carol"
        assert "caught up 2 changed speakers" in caplog.text and "built the index" not in caplog.text
        assert b.index.check().ok and b.index.check().speakers_in_index == 3
        caplog.clear()
        a.remove("alice")
        a.remove("carol")  # 2 of b's 3 speakers changed: more than half, so b rebuilds
        with caplog.at_level("DEBUG", logger="voicebank.index.faiss_search"):
            assert b.identify(voices["dave"][2]).match.name == "dave"
        assert "built the index from SQL: 1 voiceprints" in caplog.text
        assert b.index.check().ok

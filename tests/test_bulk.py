"""Many recordings at once: ``embed_many``, ``enroll_many``, the folder/CSV manifest and
``voicebank import``, with the tiny random-weight WavLM, real WAV files, and real SQLite and
PostgreSQL databases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY_THRESHOLD
from voicebank import VoiceBank
from voicebank import manifest
from voicebank.errors import AudioError, InvalidInputError
from voicebank.results import Enrollment

# Batching, manifests and bulk enrollment are the bank's logic: the fake embedder (conftest), except
# where a test says what the WavLM does.
pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]

FOUR = ("alice", "bob", "carol", "dave")


@pytest.fixture
def people(tmp_path, voices) -> Path:
    """people/<name>/<name>0.wav, <name>1.wav for four speakers, plus a stray text file."""
    root = tmp_path / "people"
    for name in FOUR:
        (root / name).mkdir(parents=True)
        for path in voices[name][:2]:
            shutil.copy(path, root / name / path.name)
    (root / "alice" / "notes.txt").write_text("not audio")
    return root


def test_embed_many_equals_embed_one_by_one(bank, voices):
    files = [p for name in ("alice", "bob", "stranger") for p in voices[name]]
    together = bank.embed_many(files)
    alone = np.stack([bank.embed(f) for f in files])
    assert together.shape == (len(files), bank.dimension) and together.dtype == np.float32
    assert np.min(np.sum(together * alone, axis=1)) >= 0.999


def test_embed_many_raises_the_first_unusable_recording(bank, voices, corrupt):
    with pytest.raises(AudioError, match="corrupt.wav: not a readable audio file"):
        bank.embed_many([voices["alice"][0], corrupt, voices["bob"][0]])


def test_identify_many_answers_each_in_place_and_audits_each(bank, voices, corrupt):
    for name in ("alice", "bob"):
        bank.enroll(name, voices[name][:2])
    results = bank.identify_many([voices["alice"][2], corrupt, voices["stranger"][2], voices["bob"][2]],
                                 top_k=1, client="batch")
    assert isinstance(results[1], AudioError) and "corrupt.wav: not a readable audio file" in str(results[1])
    assert results[0].match.name == "alice" and results[3].match.name == "bob"
    assert results[2].match is None and len(results[2].candidates) == 1
    one_by_one = bank.identify(voices["bob"][2], top_k=1)
    assert abs(one_by_one.candidates[0].score - results[3].candidates[0].score) < 1e-3
    trail = [(e.operation, e.returned, e.client, (e.detail or "")[:32]) for e in reversed(bank.audit.entries())]
    # the unusable recording is audited too, as refused, with the reason
    assert trail == [("identify", "alice", "batch", ""), ("identify", None, "batch", f"refused: {corrupt}"[:32]),
                     ("identify", None, "batch", ""), ("identify", "bob", "batch", ""), ("identify", "bob", None, "")]


def test_enroll_many_enrolls_skips_and_fails_speaker_by_speaker(db_url, model, voices, corrupt):
    with VoiceBank.open(db_url, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("carol", voices["carol"][:2])
        done: list[int] = []
        outcomes = bank.enroll_many(
            [
                Enrollment("alice", voices["alice"][:2], {"team": "A"}),
                Enrollment("bob", [voices["bob"][0], corrupt]),  # one bad recording: bob only fails
                Enrollment("carol", voices["carol"][2:]),  # already enrolled
                Enrollment("dave", voices["dave"][:2]),
                Enrollment("alice", voices["alice"][2:]),  # given twice
                Enrollment("", voices["dave"][2:]),
            ],
            progress=lambda d, total, label: done.append(d),
        )
        assert [(o.name, o.status) for o in outcomes] == [
            ("alice", "enrolled"), ("bob", "failed"), ("carol", "skipped"), ("dave", "enrolled"),
            ("alice", "failed"), ("", "failed"),
        ]
        assert "corrupt.wav: not a readable audio file" in outcomes[1].message
        assert "given more than once" in outcomes[4].message
        assert done == [1, 2, 3, 4, 5, 6]  # alice's 2, bob's 2, dave's 2 recordings
        assert outcomes[0].speaker.metadata == {"team": "A"} and len(outcomes[0].speaker.recordings) == 2
        assert [s.name for s in bank.speakers()] == ["alice", "carol", "dave"]
        assert bank.index.check().ok
        for name in ("alice", "dave"):
            assert bank.identify(voices[name][2]).match.name == name
        # the stored voiceprint is what a one-by-one enroll stores
        _, vp = bank.voiceprint("dave")
        single = bank.embed_many(voices["dave"][:2]).mean(axis=0)
        assert float(vp @ (single / np.linalg.norm(single))) >= 0.9999


def test_enroll_many_runs_the_enrollment_checks(bank, voices, tmp_path):
    from conftest import TINY_THRESHOLD
    from test_quality import retakes

    bank.thresholds.set_enrollment_checks(TINY_THRESHOLD, TINY_THRESHOLD)  # the random model's scale
    bank.enroll("alice", voices["alice"][:2])
    alice = [voices["alice"][2], *retakes(voices["alice"][0], tmp_path, 3)]  # other recordings of her voice
    outcomes = bank.enroll_many([
        Enrollment("mixed", [voices["bob"][0], voices["carol"][0]]),  # two people
        Enrollment("alice-again", alice[:2]),  # the voice of alice: a warning
        Enrollment("alice-copy", [voices["alice"][1], voices["alice"][2]]),  # one of her very recordings
    ])
    assert outcomes[0].status == "failed" and "does not sound like the other recordings" in outcomes[0].message
    assert outcomes[1].status == "enrolled" and "already matches alice" in outcomes[1].speaker.warnings[0]
    assert outcomes[2].status == "failed" and "already enrolled for alice" in outcomes[2].message
    strict = bank.enroll_many([Enrollment("alice-3", alice[2:])], strict=True)
    assert strict[0].status == "failed" and "Refused (strict)" in strict[0].message


# -- the manifest -------------------------------------------------------------------------------------

def test_manifest_from_folders(people):
    speakers = manifest.read(people)
    assert [s.name for s in speakers] == list(FOUR)
    assert [p.name for p in speakers[0].recordings] == ["alice0.wav", "alice1.wav"]  # not notes.txt


def test_manifest_skips_hidden_files_and_archive_debris(people):
    (people / "alice" / "._alice0.wav").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (people / "bob" / "__MACOSX").mkdir()
    (people / "bob" / "__MACOSX" / "bob0.wav").write_bytes(b"junk")
    (people / ".Trash").mkdir()
    (people / "alice" / "old").mkdir()
    shutil.copy(people / "alice" / "alice0.wav", people / "alice" / "old" / "alice9.wav")
    speakers = {s.name: [p.name for p in s.recordings] for s in manifest.read(people)}
    assert speakers["alice"] == ["alice0.wav", "alice1.wav", "alice9.wav"]
    assert speakers["bob"] == ["bob0.wav", "bob1.wav"]
    assert ".Trash" not in speakers


def test_a_speaker_folder_without_audio_fails_that_speaker_only(bank, people):
    (people / "erin").mkdir()
    (people / "erin" / "notes.txt").write_text("no audio here")
    outcomes = {o.name: o for o in bank.enroll_many(manifest.read(people))}
    assert outcomes["erin"].status == "failed"
    assert outcomes["erin"].message == "no recordings were given: give at least one (.wav, .flac, .mp3, ...)."
    assert all(outcomes[name].status == "enrolled" for name in FOUR)


def test_manifest_csv_lines_repeats_and_spellings(tmp_path):
    csv = tmp_path / "staff.csv"
    csv.write_text("name,file\n"
                   "alice,a0.wav\n"
                   "\n"
                   "alice,a0.wav\n"  # the same line twice: harmless
                   "e\u0301le\u0300ve,x.wav\n"  # decomposed ...
                   "\u00e9l\u00e8ve,y.wav\n"  # ... and composed: one speaker
                   "bob,\n")
    with pytest.raises(InvalidInputError, match="line 7: the name and the file must both be given"):
        manifest.read(csv)
    csv.write_text(csv.read_text().replace("bob,\n", ""))
    speakers = manifest.read(csv)
    assert [(s.name, [p.name for p in s.recordings]) for s in speakers] == [
        ("alice", ["a0.wav"]), ("\u00e9l\u00e8ve", ["x.wav", "y.wav"])]


def test_manifest_from_csv(tmp_path, people):
    csv = tmp_path / "staff.csv"
    csv.write_text("name,file,employee_id,room\n"
                   "alice,people/alice/alice0.wav,42,\n"
                   "bob,people/bob/bob0.wav,7,B2\n"
                   "alice,people/alice/alice1.wav,42,A1\n")
    speakers = manifest.read(csv)
    assert [(s.name, [p.name for p in s.recordings], s.metadata) for s in speakers] == [
        ("alice", ["alice0.wav", "alice1.wav"], {"employee_id": "42", "room": "A1"}),
        ("bob", ["bob0.wav"], {"employee_id": "7", "room": "B2"}),
    ]
    assert speakers[0].recordings[0] == tmp_path / "people" / "alice" / "alice0.wav"


@pytest.mark.parametrize("text, words", [
    ("who,path\nalice,a.wav\n", "needs a header line with the columns name and file (found: who, path)"),
    ("name,file\n", "lists no recordings"),
    ("name,file\nalice,\n", "line 2: the name and the file must both be given"),
    ("name,file,id\nalice,a.wav,1\nalice,b.wav,2\n", "line 3: id of alice is '2' here but '1' on an earlier line"),
])
def test_manifest_errors(tmp_path, text, words):
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(InvalidInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        manifest.read(csv)


def test_manifest_of_a_folder_without_speaker_folders(tmp_path):
    with pytest.raises(InvalidInputError, match="holds no speaker folders"):
        manifest.read(tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        manifest.read(tmp_path / "nowhere")


# -- voicebank import ---------------------------------------------------------------------------------

def test_cli_import_twice_after_fixing_a_failure(tmp_path, model, people, corrupt, voices):
    from voicebank.cli import main

    db = tmp_path / "x.db"
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, ["--db", str(db), "--model", str(model), *map(str, args)])

    assert cli("init", "--threshold", TINY_THRESHOLD, "--identify-rule", "best").exit_code == 0
    bad = people / "bob" / "bob1.wav"
    shutil.copy(corrupt, bad)
    first = cli("import", people)
    assert first.exit_code == 2
    assert first.stdout.splitlines()[0] == "Enrolled 3 speakers, skipped 0 already enrolled, 1 failed."
    assert f"bob failed: {bad}: not a readable audio file" in first.stdout
    assert first.stderr == ("Error: 1 of 4 speakers failed and were not stored; fix their recordings and run "
                            "the same import again (enrolled speakers are skipped).\n")
    shutil.copy(voices["bob"][1], bad)
    second = cli("import", people, "--json")
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout)
    assert {k: report[k] for k in ("enrolled", "skipped", "failed")} == {"enrolled": 1, "skipped": 3, "failed": 0}
    assert report["speakers"][1] == {"name": "bob", "status": "enrolled", "recordings": 2,
                                     "speech_s": report["speakers"][1]["speech_s"], "warnings": []}
    listed = json.loads(cli("list", "--json").stdout)
    assert [s["name"] for s in listed] == list(FOUR)


def test_cli_import_of_a_bad_manifest_is_one_error_line(tmp_path, model):
    from voicebank.cli import main

    csv = tmp_path / "staff.csv"
    csv.write_text("who,where\n")
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "x.db"), "--model", str(model), "import", str(csv)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and "columns name and file" in result.stderr


@pytest.mark.embedder("tiny")  # the WavLM loads lazily; the fake has nothing to load
def test_an_import_with_nothing_new_does_not_load_the_model(db_path, model, voices):
    with VoiceBank.open(db_path, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
    with VoiceBank.open(db_path, str(model)) as again:
        outcomes = again.enroll_many([Enrollment("alice", voices["alice"][:2])])
        assert [o.status for o in outcomes] == ["skipped"]
        assert again._encoder.embedder._loaded is None  # seconds saved on every re-run of the same import


def test_a_path_the_system_cannot_open_is_one_audio_error(bank, voices):
    too_long = "x" * 5000 + ".wav"  # ENAMETOOLONG: raised by the file system, not a missing file
    with pytest.raises(AudioError, match=r"cannot read the file \(File name too long\)"):
        bank.embed(too_long)


def test_a_csv_naming_a_column_twice_is_refused(tmp_path):
    from voicebank.errors import InvalidInputError
    from voicebank.manifest import read

    csv_file = tmp_path / "staff.csv"
    csv_file.write_text("name,file,name\nx,a.wav,y\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="names the column 'name' more than once"):
        read(csv_file)

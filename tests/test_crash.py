"""kill -9 at the worst moments, then reopen: SQL holds whole speakers or nothing, every enrollment
a process reported done is there, and the FAISS cache catches up or rebuilds by itself.

Workers are ``tests/bank_worker.py`` processes. ``VB_CRASH=point:n`` makes one SIGKILL itself the
n-th time it reaches a point (see ``bank_worker.CRASH_POINTS``); others are killed from outside
after a random delay. Most are forked from a zygote that has imported torch once (a fresh
interpreter costs ~5 s); a few are fresh interpreters, to show the zygote changes nothing.
Damaged, foreign and stale index files are covered at the end, in-process.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from bank_worker import (
    Worker,
    WorkerDied,
    Zygote,
    consistency_problems,
    samples,
    speaker_voices,
    voice,
    worker_args,
)
from conftest import SR, TINY_THRESHOLD

pytestmark = pytest.mark.slow


def f0_seed(name: str) -> tuple[float, int]:
    """The voice of speaker ``s<i>``: f0 from 90 Hz in 11 Hz steps, its own seed."""
    i = int(name[1:])
    return 90.0 + 11.0 * i, 300 + i


def enroll(name: str) -> dict:
    return {"op": "enroll", "name": name, "voices": speaker_voices(*f0_seed(name))}


def probe(name: str):
    return samples(voice(*f0_seed(name), take_no=9)), SR


SAVE = {"op": "save"}


def identify(name: str) -> dict:
    return {"op": "identify", "voices": [voice(*f0_seed(name), take_no=9)]}


# The worker saves its index now and then, as a long-running service might; identifying catches
# its cache up first (saving writes the cache as it is: it does not catch up by itself).
SCRIPT = [enroll("s0"), enroll("s1"), identify("s0"), SAVE, {"op": "remove", "name": "s0"}, identify("s1"), SAVE,
          enroll("s2"), identify("s2"), SAVE]
# Index file writes (W): enroll s1 builds the first one (its check searches; seq 1, {s0}); the
# save at 3 writes seq 2 {s0, s1}; the save at 6 writes seq 3 {s1}; the save at 9 seq 4 {s1, s2}.

# (crash point, index in SCRIPT of the command it interrupts, is that command's effect in SQL?)
POINTS = [
    ("embed:2", 1, False),  # embedding s1's recordings (an enrollment embeds its recordings in one call)
    ("forward:2", 1, False),  # inside the model's forward pass on s1's recordings
    ("before_flush:2", 1, False),  # s1's transaction open, sequence taken, nothing inserted
    ("after_flush:2", 1, False),  # speaker and utterances inserted, change row not yet added
    ("before_commit:2", 1, False),  # change row added, not flushed
    ("commit_flushed:2", 1, False),  # every statement sent, COMMIT not sent
    ("after_commit:2", 1, True),  # committed, never reported
    ("index_write:1", 1, False),  # building the first index file, inside enroll s1
    ("index_tmp_half:1", 1, False),  # half of the first index temp file written
    ("index_write:2", 3, None),  # a save, nothing written yet
    ("index_tmp_half:2", 3, None),  # mid-write of the index temp file
    ("index_tmp_full:2", 3, None),  # index temp file complete, not renamed
    ("sidecar_write:2", 3, None),  # new index file in place, old sidecar
    ("sidecar_tmp_half:2", 3, None),  # mid-write of the sidecar temp file
    ("sidecar_tmp_full:2", 3, None),  # sidecar temp file complete, not renamed
    ("index_saved:2", 3, None),  # both renamed, the file lock still held
    ("before_commit:3", 4, False),  # removing s0: change row added, not flushed
    ("commit_flushed:3", 4, False),  # removing s0: DELETE sent, COMMIT not sent
    ("after_commit:3", 4, True),  # s0 removed, never reported
    ("index_tmp_full:3", 6, None),  # a save dies: the file on disk still holds removed s0
    ("sidecar_write:3", 6, None),  # a save dies between files: new index, the old one's sidecar
]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote") / "zygote.log")
    yield z
    z.close()


def new_bank(db_url: str, model) -> None:
    from voicebank import VoiceBank

    VoiceBank.open(db_url, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best").close()


def child_env() -> dict[str, str]:
    """What a forked child must see of this test's environment (the pg fixture's cache folder)."""
    return {k: os.environ[k] for k in ("VOICEBANK_CACHE",) if k in os.environ}


def settle(db_url: str, model, script: list[dict], replies: list[dict], effect: bool | None = None,
           in_flight_at: int | None = None) -> set[str]:
    """Everything that must hold after a crash; returns who is enrolled afterwards."""
    from voicebank import VoiceBank
    from voicebank.errors import DuplicateSpeakerError, SpeakerNotFoundError

    answered = [r for r in replies if "op" in r]
    bad = [r for r in answered if not r["ok"]]
    assert bad == [], bad
    assert len(answered) < len(script), "the worker finished its script: it was never killed in it"
    in_flight = script[len(answered)]
    if in_flight_at is not None:
        assert len(answered) == in_flight_at, (f"the crash was meant to interrupt command {in_flight_at} "
                                               f"({script[in_flight_at]['op']}), it interrupted {len(answered)}")
    reported: set[str] = set()  # who is enrolled after every command the worker reported done
    named: set[str] = set()
    for command in script[: len(answered)]:
        if command["op"] == "enroll":
            reported.add(command["name"])
        elif command["op"] == "remove":
            reported.discard(command["name"])
        if "name" in command:
            named.add(command["name"])
    touching = {in_flight["name"]} if in_flight["op"] in ("enroll", "remove") else set()
    print(f"killed in command {len(answered)}: {in_flight['op']} {in_flight.get('name', '')}")

    assert consistency_problems(db_url, utterances_per_speaker=2) == []
    with VoiceBank.open(db_url, str(model)) as bank:
        present = {s.name for s in bank.speakers()}
        kept, gone = reported - touching, named - reported - touching
        assert kept <= present, f"reported enrollments lost: {sorted(kept - present)}"
        assert not gone & present, f"reported removals undone: {sorted(gone & present)}"
        unexplained = present - reported - touching
        assert not unexplained, f"speakers nobody enrolled: {sorted(unexplained)}"
        if effect is not None:
            name = in_flight["name"]
            happened = (name in present) if in_flight["op"] == "enroll" else (name not in present)
            assert happened is effect, f"{in_flight['op']} {name}: expected done={effect}, found done={happened}"

        report = bank.index.check()
        assert report.ok, report
        assert report.speakers_in_sql == report.speakers_in_index == len(present), report
        for name in sorted(present):
            found = bank.identify(probe(name))
            assert found.match is not None and found.match.name == name, (name, found)

        # The interrupted command can simply be retried.
        if in_flight["op"] == "enroll":
            name = in_flight["name"]
            if name in present:
                with pytest.raises(DuplicateSpeakerError):
                    bank.enroll(name, [(samples(v), SR) for v in in_flight["voices"]])
            else:
                bank.enroll(name, [(samples(v), SR) for v in in_flight["voices"]])
                present.add(name)
        elif in_flight["op"] == "remove":
            name = in_flight["name"]
            if name in present:
                bank.remove(name)
                present.discard(name)
            else:
                with pytest.raises(SpeakerNotFoundError):
                    bank.remove(name)
        bank.index.save()
        assert {s.name for s in bank.speakers()} == present
        assert bank.index.check().ok
    assert consistency_problems(db_url, utterances_per_speaker=2) == []
    return present


@pytest.mark.parametrize("point,at,effect", POINTS, ids=[p[0] for p in POINTS])
def test_kill_at_a_chosen_point(db_url, tiny_model, zygote, tmp_path, point, at, effect):
    new_bank(db_url, tiny_model)
    child = zygote.fork(worker_args(db_url, tiny_model), SCRIPT, tmp_path / "worker",
                        env={**child_env(), "VB_CRASH": point})
    try:
        status = child.wait()
    finally:
        child.kill()
    assert status == -signal.SIGKILL, f"the worker was not killed at {point} (exit {status}):\n{child.log()}"
    settle(db_url, tiny_model, SCRIPT, child.replies(), effect, at)


def endless_script(seed: int, names: int = 12, steps: int = 3000) -> list[dict]:
    """Enroll or remove (whichever applies) a random one of ``names`` speakers, identify someone,
    save now and then; far longer than any test lets it run. Names come back after removal."""
    rng, present, script = random.Random(seed), set(), []
    for step in range(steps):
        name = f"s{rng.randrange(names)}"
        if name in present:
            script.append({"op": "remove", "name": name})
            present.discard(name)
        else:
            script.append(enroll(name))
            present.add(name)
        if present:
            script.append(identify(rng.choice(sorted(present))))
        if step % 2:
            script.append(SAVE)
    return script


@pytest.mark.parametrize("seed", range(4))
def test_kill_at_a_random_time(db_url, tiny_model, zygote, tmp_path, seed):
    new_bank(db_url, tiny_model)
    script = endless_script(seed)
    rng = random.Random(seed)
    child = zygote.fork(worker_args(db_url, tiny_model), script, tmp_path / "worker", env=child_env())
    try:
        child.wait_ready()
        time.sleep(rng.uniform(0.05, 4.0))
    finally:
        child.kill()
        status = child.wait()
    assert status == -signal.SIGKILL, child.log()
    settle(db_url, tiny_model, script, child.replies())


def test_temp_files_of_a_killed_save_do_not_pile_up(tmp_path, tiny_model, zygote):
    """A save killed mid-write leaves its temp file (as large as the index) behind; the next save,
    which holds the same file lock, should sweep it up rather than leave it there for ever."""
    from voicebank import VoiceBank

    for point in ("index_tmp_half:2", "sidecar_tmp_full:2"):
        where = tmp_path / point.replace(":", "-")
        where.mkdir()
        db_url = f"sqlite:///{where / 'bank.db'}"
        new_bank(db_url, tiny_model)
        child = zygote.fork(worker_args(db_url, tiny_model), SCRIPT[:4], where / "worker", env={"VB_CRASH": point})
        try:
            assert child.wait() == -signal.SIGKILL, child.log()
        finally:
            child.kill()
        assert list(where.glob("bank.db.faiss*.tmp")), "the kill should have left a temp file behind"
        with VoiceBank.open(db_url, str(tiny_model)) as bank:
            bank.index.rebuild()
        assert list(where.glob("bank.db.faiss*.tmp")) == [], point


def read_until_dead(worker: Worker) -> list[dict]:
    replies = []
    try:
        while True:
            replies.append(worker.read())
    except WorkerDied:
        return replies


def test_kill_a_fresh_interpreter_at_a_chosen_point(db_url, tiny_model, tmp_path):
    """The same as above without the zygote: a plain ``python tests/bank_worker.py``."""
    new_bank(db_url, tiny_model)
    worker = Worker(worker_args(db_url, tiny_model), tmp_path / "worker.log", env={"VB_CRASH": "commit_flushed:2"})
    try:
        for command in SCRIPT:
            worker.send(**command)
        replies = read_until_dead(worker)
    finally:
        worker.kill()
    assert worker.proc.returncode == -signal.SIGKILL, worker.log()
    settle(db_url, tiny_model, SCRIPT, replies, effect=False, in_flight_at=1)


def test_kill_a_fresh_interpreter_at_a_random_time(db_url, tiny_model, tmp_path):
    new_bank(db_url, tiny_model)
    script = endless_script(7)
    worker = Worker(worker_args(db_url, tiny_model), tmp_path / "worker.log")
    try:
        worker.ready()

        def feed():  # from a thread: the script is far larger than a pipe holds
            try:
                for command in script:
                    worker.send(**command)
            except (BrokenPipeError, OSError, ValueError):
                pass  # killed

        threading.Thread(target=feed, daemon=True).start()
        time.sleep(random.Random(7).uniform(0.05, 4.0))
        os.kill(worker.pid, signal.SIGKILL)
        replies = read_until_dead(worker)
    finally:
        worker.kill()
    assert worker.proc.returncode == -signal.SIGKILL, worker.log()
    settle(db_url, tiny_model, script, replies)


# -- damaged, foreign and stale index files ---------------------------------------------------------
def _sidecar(path):
    return path.with_name(path.name + ".json")


def _rewrite_sidecar(path, **changes):
    side = _sidecar(path)
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


def _garbage_with_checksum(path, other):
    import hashlib

    data = np.random.default_rng(1).bytes(path.stat().st_size)
    path.write_bytes(data)
    _rewrite_sidecar(path, sha256=hashlib.sha256(data).hexdigest())


DAMAGE = {
    "truncated index file": lambda p, other: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty index file": lambda p, other: p.write_bytes(b""),
    "garbage index file": lambda p, other: p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size)),
    "garbage index file with a matching checksum": _garbage_with_checksum,
    "garbage sidecar": lambda p, other: _sidecar(p).write_bytes(np.random.default_rng(2).bytes(300)),
    "sidecar is not an object": lambda p, other: _sidecar(p).write_text("[1, 2, 3]"),
    "sidecar nested 100000 deep": lambda p, other: _sidecar(p).write_text("[" * 100_000 + "]" * 100_000),
    "sidecar missing": lambda p, other: _sidecar(p).unlink(),
    "sidecar from another bank": lambda p, other: shutil.copy(_sidecar(other), _sidecar(p)),
    "index and sidecar from another bank": lambda p, other: (shutil.copy(other, p), shutil.copy(_sidecar(other), _sidecar(p))),
    "index ahead of SQL (a restored backup)": lambda p, other: _rewrite_sidecar(p, seq=1_000_000),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_or_foreign_index_is_rebuilt_with_a_warning(db_url, tiny_model, tmp_path, caplog, damage):
    from voicebank import VoiceBank
    from voicebank.index import SpeakerIndex

    other_path = None
    if "another bank" in damage:  # same model and dimension, another bank
        with VoiceBank.open(tmp_path / "other.db", str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as other:
            other.enroll("s9", [(samples(v), SR) for v in speaker_voices(*f0_seed("s9"))])
            other.index.rebuild()
            other_path = other._search.wideband.path
    with VoiceBank.open(db_url, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        for name in ("s0", "s4"):
            bank.enroll(name, [(samples(v), SR) for v in speaker_voices(*f0_seed(name))])
        bank.index.rebuild()
        path, info = bank._search.wideband.path, bank._search.wideband.info
    assert path.exists() and path != other_path

    DAMAGE[damage](path, other_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="voicebank"):
        with VoiceBank.open(db_url, str(tiny_model)) as bank:
            report = bank.index.check()
            found = bank.identify(probe("s4"))
    assert report.ok and report.speakers_in_index == 2, report
    if damage.startswith("index ahead"):
        assert "ahead" in report.index_file and "behind" not in report.index_file, report.index_file
    else:
        assert report.index_file.startswith("damaged or foreign, rebuilt"), report.index_file
    assert found.match is not None and found.match.name == "s4", found
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("voicebank")]
    assert any("rebuild" in r.getMessage() for r in warned), [r.getMessage() for r in caplog.records]

    assert len(SpeakerIndex.load(path, info)) == 2  # the file on disk is whole and ours again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="voicebank"):
        with VoiceBank.open(db_url, str(tiny_model)) as bank:
            again = bank.index.check()
    assert again.ok and again.index_file == "ok", again
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records


def test_index_from_a_diverged_history_is_not_trusted(tmp_path, tiny_model):
    """A host with its own cache file is down while the database is restored from a backup and
    other hosts enroll new people, who get the ids the lost speakers had; by then SQL's sequence
    has passed the file's. The file must not be trusted to be only "behind": its ids now belong to
    other people, and a voice of a lost speaker must not be identified as the newcomer."""
    import sqlite3
    from contextlib import closing

    from voicebank import VoiceBank

    db = tmp_path / "bank.db"
    host_x, host_y = tmp_path / "x" / "bank.faiss", tmp_path / "y" / "bank.faiss"

    def enroll_all(bank, *names):
        for name in names:
            bank.enroll(name, [(samples(v), SR) for v in speaker_voices(*f0_seed(name))])

    with VoiceBank.open(db, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best", index_path=host_x) as bank:
        enroll_all(bank, "s0", "s1")
    backup = tmp_path / "backup.db"
    # closed, not only committed (sqlite3's `with` does not close): a restore happens with every
    # connection to the old file gone, or this process would still hold its deleted write-ahead log
    with closing(sqlite3.connect(db)) as live, closing(sqlite3.connect(backup)) as copy:
        live.backup(copy)
    with VoiceBank.open(db, str(tiny_model), index_path=host_x) as bank:  # host X goes on, then stops
        enroll_all(bank, "s2", "s3")
        assert bank.identify(probe("s2")).match.name == "s2"  # its cache holds s0..s3 (seq 4), saved on close

    for suffix in ("", "-wal", "-shm"):  # the database is restored from the backup (seq 2)
        tmp_path.joinpath("bank.db" + suffix).unlink(missing_ok=True)
    with closing(sqlite3.connect(backup)) as copy, closing(sqlite3.connect(db)) as restored:
        copy.backup(restored)
    with VoiceBank.open(db, str(tiny_model), index_path=host_y) as bank:  # host Y enrolls newcomers (seq 5)
        enroll_all(bank, "s5", "s6", "s7")

    with VoiceBank.open(db, str(tiny_model), index_path=host_x) as bank:  # host X comes back
        report = bank.index.check()
        found = bank.identify(probe("s2"))  # s2 is gone with the restore
        assert found.match is None or found.match.name not in ("s5", "s6", "s7"), found
        assert report.ok, report


CUT_COMPANION = r"""
import os, sys
from sqlalchemy import text
from voicebank.errors import DatabaseGoneError
from voicebank.store.engine import Store

db, damage = sys.argv[1], sys.argv[2]
setup = Store(f"sqlite:///{db}")
with setup.write() as s:
    s.execute(text("CREATE TABLE t (x BLOB)"))
for _ in range(3):
    with setup.write() as s:
        s.execute(text("INSERT INTO t VALUES (zeroblob(20000))"))
if damage == "-shm after reads only":  # a process that has only read since it opened the bank
    setup.dispose()
    store = Store(f"sqlite:///{db}")
    with store.read() as s:
        s.execute(text("SELECT count(*) FROM t")).scalar()
    assert os.path.getsize(db + "-wal") == 0  # the last close checkpointed the log
else:
    store = setup
with store.read() as s:
    print("rows", s.execute(text("SELECT count(*) FROM t")).scalar(), flush=True)
if damage == "-wal overwritten":
    with open(db + "-wal", "r+b") as f:
        f.write(os.urandom(os.path.getsize(db + "-wal")))
else:
    os.truncate(db + damage.split()[0], 0)
for what, scope in (("write", store.write), ("read", store.read)):
    try:
        with scope() as s:
            s.execute(text("INSERT INTO t VALUES (1)") if what == "write" else text("SELECT count(*) FROM t"))
        print(what, "done", flush=True)
    except DatabaseGoneError as exc:
        print(what, "refused:", exc, flush=True)
os._exit(0)  # closing would checkpoint through the damaged files
"""


@pytest.mark.parametrize("damage, said", [("-wal", "-wal file was cut to 0 bytes"), ("-shm", "-shm file was cut"),
                                          ("-wal overwritten", "-wal file was overwritten"),
                                          ("-shm after reads only", "-shm file was cut")])
def test_a_write_ahead_log_cut_short_or_overwritten_in_place_refuses_reads_and_writes(tmp_path, damage, said):
    """Another program truncates or overwrites the -wal (committed pages not yet checkpointed) or
    truncates the -shm (which SQLite maps into memory, also in a process that has only read) of a
    bank in use: the next write would be acknowledged into a log nobody can replay, and the next
    access to a cut -shm kills the process with SIGBUS. Both are refused, saying what happened,
    and the process lives."""
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-c", CUT_COMPANION, str(tmp_path / "bank.db"), damage],
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    lines = found.stdout.splitlines()
    assert lines[0] == "rows 3"
    assert lines[1].startswith(f"write refused: the database's {said}"), lines[1]
    assert "Nothing was read or written" in lines[1]
    assert lines[2].startswith("read refused:")

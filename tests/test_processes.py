"""Shared deployments: several real OS processes on one bank, SQLite and PostgreSQL.

Each process is ``tests/bank_worker.py``, a long-lived voicebank driven through stdin/stdout. SQL is
the source of truth; every process keeps its own FAISS cache and must follow the others' changes
through the change sequence, without a restart. The worker processes are started once for this
module (a process pays ~5 s to import torch) and open each test's bank on command.
"""

from __future__ import annotations

import os
import time

import pytest

from bank_worker import Worker, consistency_problems, speaker_voices, voice
from conftest import TINY_THRESHOLD

pytestmark = pytest.mark.slow

ALICE, BOB, CAROL = (120.0, 1), (190.0, 2), (260.0, 3)  # (f0, seed): three well-separated voices
POOL = 4


def create_bank(db_url: str, model) -> None:
    from voicebank import VoiceBank

    VoiceBank.open(db_url, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best").close()


def ok(reply: dict) -> dict:
    assert reply.get("ok") is True, reply
    return reply


def names_of(reply: dict) -> list[str]:
    return [c["name"] for c in reply["candidates"]]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Worker processes shared by this module's tests; all killed at the end, whatever happened."""
    logs = tmp_path_factory.mktemp("workers")
    started: list[Worker] = []

    def spawn(i: int) -> Worker:
        worker = Worker([], logs / f"worker-{i}-{len(started)}.log")
        started.append(worker)
        return worker

    try:
        workers = [spawn(i) for i in range(POOL)]
        for worker in workers:
            worker.ready()
        yield workers, spawn
    finally:
        for worker in started:
            worker.kill()


@pytest.fixture
def workers(pool, tiny_model):
    """``workers(n, db_url, index_paths=None)``: ``n`` worker processes, each with the bank open
    (the cache folder of a PostgreSQL bank is this test's). Afterwards each closes its bank; one
    that still owes answers (a failed test) is killed and replaced."""
    processes, spawn = pool
    used: set[int] = set()

    def take(n: int, db_url: str, index_paths: list | None = None) -> list[Worker]:
        env = {"VOICEBANK_CACHE": os.environ["VOICEBANK_CACHE"]} if "VOICEBANK_CACHE" in os.environ else {}
        for i in range(n):
            used.add(i)
            path = str(index_paths[i]) if index_paths else None
            processes[i].open(db_url, tiny_model, index_path=path, env=env)
        return processes[:n]

    yield take
    for i in sorted(used):
        worker = processes[i]
        try:
            assert worker.pending == 0
            ok(worker.call(op="close", timeout=60))
        except Exception:
            worker.kill()
            processes[i] = spawn(i).ready()


def test_a_process_sees_another_process_enroll_and_remove_without_restarting(db_url, tiny_model, workers):
    create_bank(db_url, tiny_model)
    # B opens first and stays up the whole time; both use the default cache file of the database.
    b, a = workers(2, db_url)
    ok(a.call(op="enroll", name="bob", voices=speaker_voices(*BOB)))
    ok(a.call(op="enroll", name="carol", voices=speaker_voices(*CAROL)))

    alice_probe = [voice(*ALICE, take_no=7)]
    before = ok(b.call(op="identify", voices=alice_probe))  # B loads its index now, without alice
    assert before["match"] is None and "alice" not in names_of(before), before
    ok(b.call(op="save"))  # and B's file on disk is behind too

    ok(a.call(op="enroll", name="alice", voices=speaker_voices(*ALICE)))

    seen = ok(b.call(op="identify", voices=alice_probe))
    assert seen["match"] is not None and seen["match"]["name"] == "alice", seen
    assert ok(b.call(op="verify", name="alice", voices=alice_probe))["accepted"] is True
    assert ok(b.call(op="identify", voices=[voice(*BOB, take_no=7)]))["match"]["name"] == "bob"
    report = ok(b.call(op="check"))["report"]
    assert report["ok"] and report["speakers_in_sql"] == 3 and report["speakers_in_index"] == 3, report

    ok(a.call(op="remove", name="alice"))

    gone = ok(b.call(op="identify", voices=alice_probe))
    assert "alice" not in names_of(gone) and (gone["match"] or {}).get("name") != "alice", gone
    refused = b.call(op="verify", name="alice", voices=alice_probe)
    assert refused["ok"] is False and refused["error"] == "SpeakerNotFoundError", refused
    assert ok(b.call(op="identify", voices=[voice(*CAROL, take_no=7)]))["match"]["name"] == "carol"
    report = ok(b.call(op="check"))["report"]
    assert report["ok"] and report["speakers_in_sql"] == 2 and report["speakers_in_index"] == 2, report
    assert ok(b.call(op="names"))["names"] == ["bob", "carol"]
    assert consistency_problems(db_url, utterances_per_speaker=2) == []


PROCESSES, PER_PROCESS = 4, 25


def test_four_processes_enroll_25_speakers_each_at_once(db_url, tiny_model, workers, tmp_path):
    create_bank(db_url, tiny_model)
    start_line = tmp_path / "start"
    names = {p: [f"p{p}-speaker-{i:02d}" for i in range(PER_PROCESS)] for p in range(PROCESSES)}
    # Each process keeps its own FAISS index file, as separate hosts would.
    procs = workers(PROCESSES, db_url, [tmp_path / f"index-{p}" / "bank.faiss" for p in range(PROCESSES)])
    began = time.monotonic()
    for p, worker in enumerate(procs):
        worker.send(op="barrier", dir=str(start_line), n=PROCESSES)
        for i, name in enumerate(names[p]):
            k = p * PER_PROCESS + i  # 100 distinct voices: f0 80..377 Hz in 3 Hz steps, own seeds
            worker.send(op="enroll", name=name, voices=speaker_voices(80.0 + 3 * k, 10 + k))
    for worker in procs:
        ok(worker.read())  # the barrier
    replies = {p: [worker.read() for _ in range(PER_PROCESS)] for p, worker in enumerate(procs)}
    took = time.monotonic() - began
    failures = [r for rs in replies.values() for r in rs if not r.get("ok")]
    assert failures == [], failures[:3]
    assert {p: [r["name"] for r in rs] for p, rs in replies.items()} == names
    ids = [r["id"] for rs in replies.values() for r in rs]
    assert len(set(ids)) == PROCESSES * PER_PROCESS

    expected = sorted(n for ns in names.values() for n in ns)
    for worker in procs:
        assert ok(worker.call(op="names"))["names"] == expected
        report = ok(worker.call(op="check"))["report"]
        assert report["ok"], report
        assert report["speakers_in_sql"] == report["speakers_in_index"] == PROCESSES * PER_PROCESS, report
    # Every process now finds a speaker another process enrolled.
    for p, worker in enumerate(procs):
        k = ((p + 1) % PROCESSES) * PER_PROCESS + 7
        found = ok(worker.call(op="identify", voices=[voice(80.0 + 3 * k, 10 + k, take_no=5)]))
        assert names_of(found)[0] == names[(p + 1) % PROCESSES][7], found
    for worker in procs:
        ok(worker.call(op="close"))  # each saves its own index file
    assert consistency_problems(db_url, utterances_per_speaker=2) == []

    from voicebank import VoiceBank

    for p in range(PROCESSES):  # each process's own file, as it left it, agrees with SQL
        with VoiceBank.open(db_url, str(tiny_model), index_path=tmp_path / f"index-{p}" / "bank.faiss") as bank:
            assert [s.name for s in bank.speakers()] == expected
            report = bank.index.check()
            assert report.ok and report.index_file == "ok", report
    print(f"\n{PROCESSES}x{PER_PROCESS} concurrent enrollments on {db_url.split(':')[0]}: {took:.1f} s")


def test_two_processes_enroll_the_same_new_name_at_once(db_url, tiny_model, workers, tmp_path):
    """Rounds of two processes enrolling one new name, each with its own voice, released together by
    a file barrier. ``start``: both calls begin together. ``writing``: both are past the name
    pre-check, the embedding and the quality checks, and open their write transactions together,
    so the second writer must be stopped inside its own transaction. Always exactly one wins; the other gets DuplicateSpeakerError."""
    create_bank(db_url, tiny_model)
    racers = workers(2, db_url)
    winners = {}
    for rnd, race_at in enumerate(["start", "writing"] * 3):
        name = f"contested-{rnd}-{race_at}"
        gate = str(tmp_path / f"gate-{rnd}")
        for i, worker in enumerate(racers):
            worker.send(op="enroll", name=name, voices=speaker_voices(150.0 + 90 * i, 50 + 10 * rnd + i),
                        barrier={"dir": gate, "n": 2, "at": race_at})
        replies = [worker.read() for worker in racers]
        won = [i for i, r in enumerate(replies) if r.get("ok")]
        lost = [r for r in replies if not r.get("ok")]
        assert len(won) == 1, replies
        assert [r["error"] for r in lost] == ["DuplicateSpeakerError"], replies
        assert name in lost[0]["message"]
        winners[name] = replies[won[0]]
    for worker in racers:
        assert ok(worker.call(op="names"))["names"] == sorted(winners)
        assert ok(worker.call(op="check"))["report"]["ok"]
    assert consistency_problems(db_url, utterances_per_speaker=2) == []

    from voicebank import VoiceBank

    with VoiceBank.open(db_url, str(tiny_model)) as bank:  # each stored speaker is all the winner's
        for name, reply in winners.items():
            assert [r.sha256 for r in bank.speaker(name).recordings] == reply["sha256"]
        assert bank.index.check().ok

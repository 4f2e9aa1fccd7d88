"""Adversarial cases found after issue 21's fixes, that belong to no one module: each was a
traceback, a 500 or a wrong answer, and is now a clear refusal or the right answer."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from voicebank import VoiceBank
from voicebank.errors import AudioError

pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]


@pytest.mark.skipif(os.uname().sysname == "Darwin", reason="macOS file names must be UTF-8")
def test_a_recording_whose_file_name_is_not_utf8_is_read_stored_and_audited(bank, voices, tmp_path):
    """caf\\xe9.wav (a Latin-1 name): libsndfile was handed a name it could not encode, so a good
    recording was "not a readable audio file", and a refusal naming it was written to the audit
    trail with its lone surrogate: a UnicodeEncodeError traceback from identify and verify."""
    takes = []
    for i, source in enumerate(voices["alice"]):
        take = tmp_path / os.fsdecode(f"take\xe9{i}.wav".encode("latin-1"))
        shutil.copy(source, take)
        takes.append(take)
    speaker = bank.enroll("alice", takes)
    assert [r.label for r in speaker.recordings] == [str(tmp_path / f"take\\udce9{i}.wav") for i in range(3)]
    assert bank.identify(takes[0]).match.name == "alice"
    silent = tmp_path / os.fsdecode(b"caf\xe9.wav")
    import soundfile as sf

    sf.write(os.fsencode(silent), np.zeros(16_000 * 2, dtype=np.float32), 16_000)
    for decide in (lambda: bank.identify(silent), lambda: bank.verify("alice", silent)):
        with pytest.raises(AudioError, match=r"caf\\udce9.wav: the recording is silent"):
            decide()
    assert bank.audit.entries(limit=1)[0].detail.startswith(f"refused: {tmp_path}/caf\\udce9.wav: the recording is silent")


def test_enrollment_keeps_the_rows_not_the_decoded_audio_of_every_recording(bank, voices, tmp_path, monkeypatch):
    """Every decoded recording was kept until the last was embedded: one enrollment of 341 takes of
    2 minutes (19 MB of FLAC, one request) took a server from 388 MB to 3,036 MB. What is stored
    is a row per take; the audio goes as soon as its take is embedded (the pipeline's own window
    of decoded audio, two chunks, is what stays bounded)."""
    import gc
    import weakref

    import soundfile as sf

    from voicebank import audio as audio_mod
    from voicebank import pipeline

    alive: list[weakref.ref] = []
    real_load = audio_mod.load

    def load(*args, **kwargs):
        decoded = real_load(*args, **kwargs)
        alive.append(weakref.ref(decoded))
        return decoded

    monkeypatch.setattr(audio_mod, "load", load)
    monkeypatch.setattr(pipeline, "DEFAULT_CHUNK_SECONDS", 3.0)  # a take per chunk, as takes of 2 minutes are
    held: list[int] = []

    def progress(_done: int, _total: int, _label: str) -> None:  # as each take is embedded
        gc.collect()
        held.append(sum(ref() is not None for ref in alive))

    source, _ = sf.read(voices["alice"][0], dtype="float32")
    takes = []
    for i in range(12):
        take = tmp_path / f"take{i}.wav"
        sf.write(take, source * (0.5 + 0.04 * i), 16_000)
        takes.append(take)
    bank.enroll("alice", takes, progress=progress)
    assert len(alive) == 12 and max(held) <= 6, held  # the pipeline's window; all 12 by the end before


def test_a_shm_being_rebuilt_by_another_process_is_waited_for_not_taken_for_a_cut(bank, voices, monkeypatch):
    """A process that opens the bank while no other holds a connection (a `voicebank reindex` beside
    a server between requests) truncates the -shm to 3 bytes, replays the -wal, then grows it
    again; a server request in that moment was refused, 503 "the -shm file was cut to 3 bytes ...
    Stop every voicebank process" (2 of 50 requests under such a load). A cut that stays is
    still refused."""
    from voicebank.errors import DatabaseGoneError
    from voicebank.store import engine

    bank.enroll("alice", voices["alice"])
    seen = []

    def rebuilding(database, mapped=False):
        seen.append(database)
        return "-shm file was cut to 3 bytes" if len(seen) <= 3 else None

    monkeypatch.setattr(engine, "_cut_short", rebuilding)
    assert [s.name for s in bank.speakers()] == ["alice"] and len(seen) == 4
    monkeypatch.setattr(engine, "_cut_short", lambda database, mapped=False: "-shm file was cut to 3 bytes")
    with pytest.raises(DatabaseGoneError, match="-shm file was cut to 3 bytes while in use"):
        bank.speakers()


def test_a_live_caller_gone_when_its_session_ends_is_no_error_in_the_server_log(caplog):
    """A caller that stops sending and goes away as its idle time runs out: the session's last
    messages went to a closed socket, and uvicorn logged "Exception in ASGI application" with a
    traceback (WebSocketDisconnect). The session is closed (audited) all the same."""
    import anyio
    from starlette.websockets import WebSocketDisconnect

    from voicebank.server import live

    class Gone:
        async def receive(self):
            return {"type": "websocket.receive", "text": "not audio"}

        async def send_text(self, _text):
            raise WebSocketDisconnect(1006)

        async def close(self, **_kwargs):
            raise WebSocketDisconnect(1006)

    class Session:
        closed = False

        def close(self):
            self.closed = True
            return type("Final", (), {"to_dict": lambda _self: {"event": "final"}})()

    session = Session()
    with caplog.at_level("INFO", logger=live.__name__):  # the CLI's tests may have left `voicebank` at WARNING
        anyio.run(live._serve, Gone(), session, live.LiveLimits(), 16_000, None)
    assert session.closed and "left before its session's last message" in caplog.text

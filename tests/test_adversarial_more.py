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

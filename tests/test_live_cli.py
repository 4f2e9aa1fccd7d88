"""`voicebank listen`: a recording streamed through a live session, one line per update.

The bank uses the fake spectrum embedder and the real speech detector on synthetic voices; what
the command prints is checked against what the library's session says for the same audio.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from voicebank import VoiceBank
from voicebank.cli import main

from conftest import SR, TINY_THRESHOLD, synth_voice

pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]


@pytest.fixture
def call(tmp_path):
    """A 5 s call of alice's voice (not one of her enrollment takes), as a WAV file."""
    path = tmp_path / "call.wav"
    sf.write(path, synth_voice(120.0, 5.0, seed=7), SR)
    return path


@pytest.fixture
def cli_bank(db_path, model):
    with VoiceBank.open(db_path, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", [(synth_voice(120.0, 6.0, seed=1), SR)])
        bank.enroll("bob", [(synth_voice(260.0, 6.0, seed=2), SR)])
    return ["--db", str(db_path), "--model", model]


def library_updates(args, call, name):
    samples = sf.read(call, dtype="float32")[0]
    with VoiceBank.open(args[1], args[3]) as bank:
        session = bank.listen(name)
        updates = [u for at in range(0, len(samples), 1600) for u in session.feed(samples[at: at + 1600])]
        return [u.to_dict() for u in updates + [session.close()]]


@pytest.mark.parametrize("name", ["alice", None])
def test_each_update_is_one_json_line_as_the_library_gives_it(cli_bank, call, name):
    result = CliRunner().invoke(main, [*cli_bank, "listen", str(call), "--json", *(["--name", name] if name else [])])
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    expected = library_updates(cli_bank, call, name)
    assert [x["event"] for x in lines] == ["listening", "listening", "decision", "decision", "decision", "final"]
    assert lines == expected
    final = lines[-1]
    assert result.exit_code == (0 if final.get("accepted", final.get("match")) else 1), result.output


def test_raw_pcm_on_stdin_is_heard_as_the_file_is(cli_bank, call):
    samples = sf.read(call, dtype="float32")[0]
    pcm = np.round(samples * 32767).astype("<i2").tobytes()
    from_file = CliRunner().invoke(main, [*cli_bank, "listen", str(call), "--json", "--name", "alice"])
    from_stdin = CliRunner().invoke(main, [*cli_bank, "listen", "-", "--rate", "16000", "--json", "--name", "alice"],
                                    input=pcm)
    decided = lambda out: [(x["event"], x["at"], x.get("accepted")) for x in map(json.loads, out.splitlines())]  # noqa: E731
    assert decided(from_stdin.stdout) == decided(from_file.stdout)


def test_lines_for_people_say_who_what_and_on_how_much_speech(cli_bank, call):
    result = CliRunner().invoke(main, [*cli_bank, "listen", str(call)])
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"   1\.00 s  listening: [01]\.\d s of speech, not enough to decide yet", lines[0])
    assert lines[2].split("  ")[2].startswith(("alice (score ", "unknown, nearest alice (score "))
    assert lines[-1].startswith("  final  ") and lines[-1].endswith(f"threshold {TINY_THRESHOLD:.4f}, on 5.0 s of speech)")


@pytest.mark.parametrize("args, stdin, message", [
    (["--name", "nobody", "CALL"], None, "Error: no speaker named 'nobody'"),
    (["--rate", "8000", "CALL"], None, "Error: --rate is for raw PCM on stdin"),
    (["-"], b"\x00\x01\x02", "Error: 16-bit PCM comes in whole samples of 2 bytes"),
    (["MISSING"], None, "Error: "),
])
def test_mistakes_are_one_error_line(cli_bank, call, tmp_path, args, stdin, message):
    args = [str(call) if a == "CALL" else str(tmp_path / "missing.wav") if a == "MISSING" else a for a in args]
    result = CliRunner().invoke(main, [*cli_bank, "listen", *args], input=stdin)
    assert result.exit_code == 2 and result.stderr.startswith(message), result.output
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output

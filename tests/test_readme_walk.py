"""Every command line of the README runs as written: the five-minute walk, import, calibration,
the HTTP API with its curl call, scan, the offline model directory and PostgreSQL, in a folder
holding the files the lines name (synthetic voices, real WAV/FLAC/MP3 files), with the resemblyzer
backend (the default model is not reachable here: its download is the one thing put in its place).

A line that cannot run here is listed in NOT_RUN with the reason; a README line that is neither
run nor listed fails the test, so a new command in the README is run from the day it is added."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, SR, build_tiny_wavlm, synth_voice, take
from test_readme import README, shell_lines

from voicebank.cli import main

pytest.importorskip("resemblyzer")

# Lines that are not run, and why. CI runs the first two itself (.ci/run installs and tests as the
# README says).
NOT_RUN = {
    'pip install torch==2.13.0 -e ".[dev,resemblyzer,server]"': "CI's own install step",
    "python -m pytest -q": "CI's own test step (this test is part of it)",
    'pip install -e ".[postgres]"': "the dev extra already holds the PostgreSQL driver",
    "hf download microsoft/wavlm-base-plus-sv --local-dir ./wavlm-base-plus-sv":
        "the Hugging Face hub is unreachable here: a random-weight WavLM saved in that folder stands in",
}
# The README's blocks, by their first line: each test below runs every line of its blocks.
BLOCKS = ("pip install torch", "voicebank init", "voicebank import people/", "voicebank calibrate",
          "voicebank scan meeting.wav", "hf download", "voicebank apikey create backend", "pip install -e")
MATCH_OR_NOT = {"identify", "verify"}  # exit 1 is an answer (unknown, rejected), not a failure
PEOPLE = {"alice": 120.0, "bob": 190.0, "carol": 260.0, "dave": 330.0, "erin": 150.0, "frank": 230.0}


def _write(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, SR, format=path.suffix[1:].upper())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The files the README's lines name, in one folder."""
    root = tmp_path_factory.mktemp("walk")
    takes = {name: [take(synth_voice(f0, seconds=3.0, seed=k), 10 * k + i) for i in range(4)]
             for k, (name, f0) in enumerate(PEOPLE.items())}
    for path, samples in (("a1.wav", takes["alice"][0]), ("a2.flac", takes["alice"][1]),
                          ("a3.mp3", takes["alice"][2]), ("attempt.wav", takes["alice"][3]),
                          ("unknown.wav", takes["alice"][3]), ("calls/1.wav", takes["bob"][3]),
                          ("calls/2.wav", takes["carol"][3])):
        _write(root / path, samples)
    for i in range(3):
        _write(root / f"b{i + 1}.wav", takes["bob"][i])
        for name in ("carol", "dave"):
            _write(root / "people" / name / f"{name[0]}{i + 1}.wav", takes[name][i])
        for name in ("erin", "frank"):
            _write(root / "staff" / f"{name}{i}.wav", takes[name][i])
    (root / "staff.csv").write_text("name,file,employee_id\n" + "".join(
        f"{name},staff/{name}{i}.wav,{k}\n" for k, name in enumerate(("erin", "frank")) for i in range(3)))
    (root / "trials.txt").write_text("1 alice attempt.wav\n0 alice calls/1.wav\n1 carol calls/2.wav\n"
                                     "0 carol attempt.wav\n")
    from voicebank import embeddings_file
    from voicebank.embedding import load_embedder

    model = load_embedder("resemblyzer")  # embeddings made elsewhere by the bank's model: two people's
    gina, hank = synth_voice(170.0, 3.0, seed=40), synth_voice(210.0, 3.0, seed=41)
    made = model.embed([take(gina, 0), take(gina, 1), take(hank, 0)])
    embeddings_file.write(root / "staff.npz", model.model_id, ["gina", "hank"], [0, 0, 1], made)
    gap = np.zeros(SR // 2, dtype=np.float32)
    _write(root / "meeting.wav", np.concatenate([takes["alice"][3], gap, takes["carol"][3], gap, takes["dave"][3]]))
    build_tiny_wavlm(root / "wavlm-base-plus-sv")
    return root


def _blocks() -> dict[str, list[str]]:
    """The README's command lines, by the first words of their block."""
    blocks = {}
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        lines = shell_lines(f"```bash\n{block}```")
        blocks[lines[0]] = lines
    return blocks


def _block(first: str) -> list[str]:
    found = [lines for head, lines in _blocks().items() if head.startswith(first)]
    assert len(found) == 1, f"the README has no block starting with {first!r} (or several)"
    return found[0]


def _env() -> dict[str, str | None]:
    """The environment the lines run in, as changes to this one: no VOICEBANK_ setting but the model."""
    return {**{k: None for k in os.environ if k.startswith("VOICEBANK_")}, "VOICEBANK_MODEL": "resemblyzer"}


def _process_env(env: dict[str, str | None]) -> dict[str, str]:
    changed = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return {k: v for k, v in changed.items() if v is not None}


def _voicebank(line: str, cwd: Path, env: dict[str, str | None]) -> SimpleNamespace:
    """``line`` run as the shell would (its globs expanded in ``cwd``), in this process for speed; a
    traceback, or an exit code other than an answer's, fails the test."""
    words = shlex.split(line)
    assert words[0] == "voicebank", line
    expanded = [w for word in words[1:] for w in (sorted(str(p.relative_to(cwd)) for p in cwd.glob(word))
                                                   if any(c in word for c in "*?[") else [word])]
    with contextlib.chdir(cwd):
        result = CliRunner().invoke(main, expanded, env=env)
    done = SimpleNamespace(stdout=result.stdout, stderr=result.stderr, returncode=result.exit_code)
    command = next(w for w in expanded if not w.startswith("-") and w not in ("resemblyzer",))
    allowed = {0, 1} if command in MATCH_OR_NOT else {0}
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert done.returncode in allowed and not crashed, \
        f"{line}: exit {done.returncode}\n{done.stdout}\n{done.stderr}\n{result.exception!r}"
    return done


def _run_block(first: str, cwd: Path, env: dict[str, str]) -> dict:
    out = {}
    for line in _block(first):
        if line in NOT_RUN:
            continue
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
        elif line.startswith("voicebank"):
            out[line] = _voicebank(line, cwd, env)
        else:
            raise AssertionError(f"{line}: a README line this test does not know how to run")
    return out


def test_the_walk_import_calibration_and_scan_run_as_written(folder):
    env = _env()
    walk = _run_block("voicebank init", folder, env)
    assert (folder / "voicebank.db").exists()
    answers = [json.loads(line) for line in walk["voicebank identify calls/*.wav --json"].stdout.splitlines()]
    assert len(answers) == 2 and all("candidates" in a for a in answers)
    assert "employee_id" in walk["voicebank show alice"].stdout and "bob" in walk["voicebank list"].stdout
    with contextlib.chdir(folder):
        gone = CliRunner().invoke(main, ["show", "bob"], env=env)
    assert gone.exit_code == 2 and gone.stderr.startswith("Error:"), "remove bob removed bob"
    imported = _run_block("voicebank import people/", folder, env)
    assert "erin" in imported["voicebank import staff.csv --json"].stdout
    assert {"gina", "hank"} <= set(_voicebank("voicebank list", folder, env).stdout.split())
    calibration = _run_block("voicebank calibrate", folder, env)
    measured = calibration["voicebank calibrate"].stdout
    # it asks before storing only at a terminal: run from a script without --yes it measures and keeps nothing
    assert "identify" in measured and measured.rstrip().endswith("Not stored: run again with --yes to store them.")
    assert "verify   threshold 0.8000" in _voicebank("voicebank threshold", folder, env).stdout
    assert (folder / "det.png").stat().st_size > 0
    scans = _run_block("voicebank scan meeting.wav", folder, env)
    assert json.loads(scans["voicebank scan meeting.wav --json"].stdout)
    assert (folder / "meeting.rttm").read_text().startswith("SPEAKER")


def test_the_offline_model_directory_runs_as_written(folder, tmp_path):
    shutil.copytree(folder / "wavlm-base-plus-sv", tmp_path / "wavlm-base-plus-sv")
    for line in _block("hf download"):
        if line not in NOT_RUN:
            _voicebank(line, tmp_path, _env())
    assert (tmp_path / "voicebank.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_http_api_lines_run_as_written(folder, tmp_path):
    for name in ("a1.wav", "a2.flac", "unknown.wav"):
        shutil.copy(folder / name, tmp_path / name)
    env = _env()
    _voicebank("voicebank init", tmp_path, env)
    _voicebank("voicebank enroll alice a1.wav a2.flac", tmp_path, env)
    lines, keys = _block("voicebank apikey create backend"), []
    serve = next(line for line in lines if line.startswith("voicebank serve"))
    curl = next(line for line in lines if line.startswith("curl"))
    assert set(lines) == {serve, curl} | {line for line in lines if line.startswith("voicebank apikey")}
    for line in lines:
        if line.startswith("voicebank apikey"):
            done = _voicebank(line, tmp_path, env)
            keys += re.findall(r"\bvb_[\w-]{20,}", done.stdout)
    assert len(keys) == 2, "each apikey create prints its key once"
    port = _free_port()
    words = [w if w != "8000" else str(port) for w in shlex.split(serve)[1:]]
    server = subprocess.Popen([sys.executable, "-m", "voicebank", *words], cwd=tmp_path, env=_process_env(env),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.1)
        done = subprocess.run(["bash", "-c", curl.replace("8000", str(port)) + " -s -w '\\n%{http_code}'"],
                              check=False, cwd=tmp_path, env=_process_env({**env, "KEY": keys[0]}), capture_output=True,
                              text=True,
                              timeout=120)
        body, _, status = done.stdout.rpartition("\n")
        assert status == "200", done.stdout + done.stderr
        assert json.loads(body)["match"]["name"] == "alice"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.postgres
def test_the_postgresql_lines_run_as_written(pg_url, tmp_path):
    env = _env()
    lines = [line.replace("postgresql://user@dbhost/voices", pg_url) for line in _block("pip install -e")]
    for line in lines:
        if line in NOT_RUN:
            continue
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
        else:
            _voicebank(line, tmp_path, env)


def test_every_readme_line_is_run_or_says_why_not():
    every = set(shell_lines(README))
    assert set(NOT_RUN) <= every, f"NOT_RUN lists lines the README no longer has: {set(NOT_RUN) - every}"
    covered = {line for first in BLOCKS for line in _block(first)}
    assert every - covered == set(), "README command lines in a block no test here runs"
    assert _block("pip install torch") == [line for line in _block("pip install torch") if line in NOT_RUN]

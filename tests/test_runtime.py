"""A library leaves its host process as it found it; runtime.configure() is the one opt-in place
that changes process-wide settings; the CLI's own process: `python -m voicebank`, -vv, progress
lines, and no heavy module a command does not use."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import warnings

import pytest

from conftest import REPO, TINY_THRESHOLD

# Prints, as JSON, every process-wide setting voicebank used to touch.
STATE = r"""
import json, logging, os, sys, threading, warnings

def state():
    import faiss, torch
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf
    return {
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_blas_threshold": int(faiss.cvar.distance_compute_blas_threshold),
        "denormals_flushed": (torch.tensor([2.0 ** -126]) * 0.5).item() == 0.0,
        "warnings_filters": [repr(f) for f in warnings.filters],
        "hf_verbosity": hf.get_verbosity(),
        "hf_progress_bars": hf.is_progress_bar_enabled(),
        "hub_progress_bars_disabled": are_progress_bars_disabled(),
        "root_logging": [logging.getLogger().level, len(logging.getLogger().handlers)],
        "voicebank_logging": logging.getLogger("voicebank").level,
        "environment": {k: v for k, v in os.environ.items() if k.startswith(("HF_", "OMP_", "TRANSFORMERS_"))},
        "voicebank_threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("voicebank")),
    }
"""

USE = r"""
def use(db, model, recordings, stranger, corrupt):
    from voicebank import VoiceBank, VoiceBankError
    with VoiceBank.open(db, model, create=True, threshold=%(threshold)r) as bank:
        bank.enroll("alice", recordings)
        bank.identify(stranger)
        bank.identify_many([stranger, stranger])
        try:
            bank.identify(corrupt)  # through the librosa fallback, which used to filter warnings
        except VoiceBankError:
            pass
""" % {"threshold": TINY_THRESHOLD}


def run(script: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEBANK_", "OMP_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + str(REPO / "tests")
    proc = subprocess.run([sys.executable, "-c", STATE + USE + script, *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_using_voicebank_changes_no_process_wide_setting(tiny_model, voices, corrupt, tmp_path):
    # The host's own choices, unlike any voicebank would make: more torch threads than cores, few FAISS threads.
    script = r"""
import torch, faiss
torch.set_num_threads(3); faiss.omp_set_num_threads(3)
warnings.filterwarnings("default", message="the host's own filter")
# What the libraries themselves do when first used (scipy and torch.jit add warnings filters as
# they import): done by the host first, so that whatever changes after is voicebank's doing.
import librosa, transformers
transformers.AutoModelForAudioXVector.from_pretrained(sys.argv[2])
try:
    librosa.load(sys.argv[7])
except Exception:
    pass
before = state()
import voicebank, voicebank.cli, voicebank.decode, voicebank.embedding.resemblyzer, voicebank.pipeline
imported = state()
use(sys.argv[1], sys.argv[2], sys.argv[3:6], sys.argv[6], sys.argv[7])
use(sys.argv[8], "resemblyzer", sys.argv[3:6], sys.argv[6], sys.argv[7])
print(json.dumps({"before": before, "imported": imported, "used": state()}))
"""
    pytest.importorskip("resemblyzer")
    seen = run(script, tmp_path / "w.db", tiny_model, *voices["alice"], voices["stranger"][0], corrupt, tmp_path / "r.db")
    before = seen["before"]
    assert before["torch_threads"] == 3 and before["faiss_threads"] == 3  # the host's choice took
    assert seen["imported"] == before
    assert seen["used"] == before  # VoiceBank.close() stopped the embedding workers too


@pytest.mark.slow
def test_configure_applies_settings_to_modules_loaded_later(tiny_model, voices, corrupt, tmp_path):
    script = r"""
import voicebank.runtime
voicebank.runtime.configure(threads=1, log_level=logging.DEBUG)
assert "torch" not in sys.modules and "faiss" not in sys.modules  # configuring loads neither
use(sys.argv[1], sys.argv[2], sys.argv[3:6], sys.argv[6], sys.argv[7])
print(json.dumps(state()))
"""
    after = run(script, tmp_path / "w.db", tiny_model, *voices["alice"], voices["stranger"][0], corrupt)
    assert after["torch_threads"] == 1 and after["faiss_threads"] == 1
    assert after["faiss_blas_threshold"] <= 16 * 512
    assert after["hub_progress_bars_disabled"] and not after["hf_progress_bars"]
    assert after["environment"].get("HF_HUB_DISABLE_PROGRESS_BARS") == "1"
    assert after["root_logging"] == [logging.WARNING, 1] and after["voicebank_logging"] == logging.DEBUG


def test_configure_applies_at_once_to_modules_already_loaded():
    script = r"""
import torch, faiss
torch.set_num_threads(2); faiss.omp_set_num_threads(2)
import voicebank.runtime
voicebank.runtime.configure(threads=1)
print(json.dumps(state()))
"""
    after = run(script)
    assert after["torch_threads"] == 1 and after["faiss_threads"] == 1 and after["faiss_blas_threshold"] <= 16 * 512


def test_configure_lowers_threads_to_the_usable_cores_and_never_raises_them():
    script = r"""
import torch
from voicebank import runtime
os.getloadavg = lambda: (0.0, 0.0, 0.0)  # an idle machine: this test is about the cores
torch.set_num_threads(runtime.usable_cores() + 3)
runtime.configure()
lowered = torch.get_num_threads()
torch.set_num_threads(1)
runtime.configure()
print(json.dumps([runtime.usable_cores(), lowered, torch.get_num_threads()]))
"""
    cores, lowered, kept = run(script)
    assert lowered == cores and kept == 1


@pytest.mark.parametrize("cpus, usable, load, expected", [
    (2, 2, 0.0, 2), (2, 2, 0.4, 2),  # idle, or nearly: every core
    (2, 2, 1.0, 1), (2, 2, 2.0, 1), (2, 2, 7.5, 1),  # another process on one core, or more: one thread
    (16, 16, 8.0, 8), (16, 4, 8.0, 2),  # half the machine busy: half of what this process may use
    (64, 2, 0.0, 2),  # a small CPU quota on an idle host
])
def test_threads_leave_the_cores_other_work_keeps_busy(monkeypatch, cpus, usable, load, expected):
    from voicebank import runtime

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(runtime, "usable_cores", lambda: usable)
    assert runtime.idle_cores() == expected


def test_configure_gives_torch_and_faiss_one_thread_on_a_busy_two_core_machine():
    script = r"""
import torch, faiss
from voicebank import runtime
os.cpu_count = lambda: 2
os.getloadavg = lambda: (2.5, 2.0, 1.0)  # two other processes computing
runtime.usable_cores = lambda: 2
torch.set_num_threads(2); faiss.omp_set_num_threads(2)
runtime.configure()
print(json.dumps(state()))
"""
    after = run(script)
    assert after["torch_threads"] == 1 and after["faiss_threads"] == 1


def test_quietly_silences_only_while_it_runs_and_leaves_the_hosts_filters():
    from voicebank.runtime import quietly

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = list(warnings.filters)
        entered, leave = threading.Barrier(2), threading.Event()
        seen: list = []

        def other() -> None:  # overlaps the main thread's block, enters after it and leaves after it
            with quietly("noisy", UserWarning):
                entered.wait()
                leave.wait()

        thread = threading.Thread(target=other)
        with quietly("noisy", UserWarning):
            thread.start()
            entered.wait()
            warnings.filterwarnings("error", message="the host's own")  # added by the host meanwhile
            with warnings.catch_warnings(record=True) as caught:
                warnings.warn("noisy library", UserWarning)
                warnings.warn("something else", UserWarning)
            seen = [str(w.message) for w in caught]
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("noisy again", UserWarning)  # the other thread is still inside its block
        assert not caught
        leave.set()
        thread.join()
        assert seen == ["something else"]
        assert warnings.filters[1:] == before and warnings.filters[0][0] == "error"  # only the host's is new
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("noisy after", UserWarning)
        assert [str(w.message) for w in caught] == ["noisy after"]


def test_embedding_workers_stop_on_shutdown_and_later_work_still_runs():
    pytest.importorskip("torch")
    from voicebank.embedding import parallel
    from voicebank.pipeline import shutdown

    pool = parallel.Workers(2)
    parallel._pools[2] = pool
    assert pool.submit(lambda x: x + 1, 1).result(timeout=30) == 2
    shutdown()
    assert not any(t.is_alive() for t in pool._threads) and parallel._pools == {}
    assert pool.submit(lambda x: x * 2, 4).result(timeout=1) == 8  # a caller that still held it: runs inline


# -- the command's own process -------------------------------------------------------------------

def command(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBANK_")}
    env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "voicebank", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_python_dash_m_voicebank_is_the_command():
    proc = command("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: voicebank ") and "Example" in proc.stdout
    proc = command("--db", "/nonexistent/folder/x.db", "list")
    assert proc.returncode == 2 and proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr


def test_a_missing_model_or_unusable_db_is_refused_before_torch_is_imported(tmp_path):
    """Importing torch and transformers takes seconds (tens of them on a busy machine): what can be
    refused without them is refused first."""
    code = r"""
import sys
from voicebank.cli import main
try:
    main(sys.argv[1:], prog_name="voicebank")
except SystemExit as exc:
    print(exc.code, sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"}))
"""
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-a-model.bin").write_bytes(b"weights?")
    (tmp_path / "audio.db").write_bytes(b"RIFF" + bytes(100))
    db = str(tmp_path / "new.db")
    cases = [(("--db", db, "--model", str(tmp_path / "nowhere"), "init"), "does not exist"),
             (("--db", db, "--model", str(tmp_path / "empty"), "init"), "holds no config.json"),
             (("--db", db, "--model", str(tmp_path / "not-a-model.bin"), "init"), "is a file, not a directory"),
             (("--db", str(tmp_path), "init"), "is a folder"),
             (("--db", str(tmp_path / "no" / "folder" / "x.db"), "init"), "check that its folder exists"),
             (("--db", str(tmp_path / "audio.db"), "init"), "is not a SQLite database"),
             (("--db", "postgresql+nosuch://u@h/db", "init"), "cannot use the database")]
    for args, expected in cases:
        proc = command(*args, code=code)
        assert expected in proc.stderr and proc.stderr.startswith("Error: "), (args, proc.stderr)
        assert proc.stdout.strip().splitlines()[-1] == "2 []", (args, proc.stdout)  # torch never imported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.db", "empty", "not-a-model.bin"]  # nothing made


def test_vv_shows_voicebanks_debug_output_and_not_other_libraries(db_path):
    code = r"""
import logging, sys
from voicebank.cli import main
try:
    main(sys.argv[1:], prog_name="voicebank")
except SystemExit:
    pass
logging.getLogger("voicebank.somewhere").debug("OURS")
logging.getLogger("numba.core.ssa").debug("THEIRS")
logging.getLogger("numba.core.ssa").warning("THEIR WARNING")
"""
    proc = command("-vv", "--db", str(db_path), "list", code=code)
    assert "DEBUG voicebank.somewhere: OURS" in proc.stderr
    assert "THEIRS" not in proc.stderr and "THEIR WARNING" in proc.stderr
    quiet = command("--db", str(db_path), "list", code=code)
    assert "OURS" not in quiet.stderr and "THEIR WARNING" in quiet.stderr


@pytest.mark.slow
def test_identify_with_resemblyzer_imports_no_torch_librosa_scipy_numba_or_transformers(tmp_path):
    """resemblyzer's network and the speech detector run in numpy (voicebank/nets.py): importing
    torch, 1 to 2 s, is no part of a resemblyzer bank's identify (bench/cli.py times it)."""
    pytest.importorskip("resemblyzer")
    import soundfile as sf

    from conftest import SR, synth_voice

    files = []
    for i in range(3):
        files.append(tmp_path / f"a{i}.wav")
        sf.write(files[-1], synth_voice(150.0, seconds=3.0, seed=i), SR)
    db = str(tmp_path / "r.db")
    for args in (("init",), ("enroll", "alice", *map(str, files))):
        proc = command("--db", db, "--model", "resemblyzer", *args)
        assert proc.returncode == 0, proc.stderr
    code = r"""
import sys
from voicebank.cli import main
try:
    main(sys.argv[1:], prog_name="voicebank")
except SystemExit as exc:
    assert exc.code in (0, 1), exc.code
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "librosa", "scipy", "numba", "transformers", "resemblyzer", "fastapi"}))
"""
    proc = command("--db", db, "identify", str(files[0]), code=code)
    assert proc.returncode == 0, proc.stderr
    assert "match: alice" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_progress_lines_when_stderr_is_not_a_terminal(capsys):
    from voicebank.cli.base import ProgressLines

    with ProgressLines(4, "Embedding", every=0.0) as bar:
        bar.update(1)
        bar.update(3)
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(",", 1)[0] for line in lines] == ["Embedding: 1/4 (25%)", "Embedding: 4/4 (100%)",
                                                         "Embedding: 4/4 (100%)"]
    with ProgressLines(4, "Embedding", every=3600.0) as bar:  # over before the first line is due
        bar.update(4)
    assert capsys.readouterr().err == ""


def test_a_long_enrollment_prints_progress_lines(bank, db_path, voices, monkeypatch):
    from click.testing import CliRunner

    from voicebank.cli import base, main

    bank.close()
    monkeypatch.setattr(base, "PROGRESS_EVERY", 0.0)  # every update is "a few seconds" after the last
    result = CliRunner().invoke(main, ["--db", str(db_path), "enroll", "bob", *map(str, voices["bob"])])
    assert result.exit_code == 0, result.output
    assert "Embedding: 3/3 (100%)" in result.stderr

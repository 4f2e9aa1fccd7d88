"""A voicebank process for the multi-process and crash tests, plus the helpers that drive it.

Run as a worker::

    python tests/bank_worker.py --db URL --model DIR [--create] [--threshold T] [--index-path P]
                                [--min-enroll-speech S] [--script FILE] [--out FILE]

It opens the bank (without ``--db``: it waits for an ``open`` command, so one process can serve
several tests), loads the model, prints ``{"ready": true, "pid": ...}``, then reads one JSON
command per line (stdin, or ``--script``) and answers each with one JSON line (stdout, or ``--out``),
flushed before the next command is read. So a reply on record means the call had returned.
Commands (``op``): ``open`` (db, model, index_path, env, ...), ``close``, ``enroll`` (name, voices or
files, metadata, barrier), ``remove``, ``identify``, ``verify``, ``check``, ``save``, ``reindex``,
``names``, ``barrier``, ``quit``. Errors are replies
``{"ok": false, "error": "<exception class>", "message": ...}``; the worker keeps going.

A voice is ``{"f0": Hz, "seed": s, "take": t, "seconds": 2.5}``: ``take(synth_voice(f0, seconds,
seed), t)`` from conftest, so every process makes the same samples from the same spec.

Crash injection: ``VB_CRASH=point:n`` makes the worker SIGKILL itself the n-th time it reaches
``point`` (counted after the model is loaded); see :data:`CRASH_POINTS`.

``python tests/bank_worker.py --zygote`` imports everything once and then forks a worker per request
(``{"fork": {"argv", "env", "script", "out", "log"}}`` -> ``{"pid"}``; ``{"wait": pid}`` ->
``{"pid", "status"}``), so that the crash tests pay the ~5 s torch import once, not once per kill.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # Several workers share few cores: one thread each, so that torch's and BLAS's pools do not
    # spin against each other (set before numpy and torch are imported; only in the workers).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from conftest import SR, synth_voice, take  # noqa: E402  (also switches the hub off)

import numpy as np  # noqa: E402

WORKER = str(Path(__file__).resolve())
STARTUP_TIMEOUT = 300  # seconds: a hang guard for slow, shared machines, never a timing assertion
REPLY_TIMEOUT = 300


# -- voices ----------------------------------------------------------------------------------------
def voice(f0: float, seed: int, take_no: int, seconds: float = 2.5) -> dict[str, Any]:
    return {"f0": f0, "seed": seed, "take": take_no, "seconds": seconds}


def speaker_voices(f0: float, seed: int, takes: tuple[int, ...] = (0, 1), seconds: float = 2.5) -> list[dict]:
    """Enrollment recordings of one synthetic speaker (two takes of 2.5 s hold > 4 s of speech)."""
    return [voice(f0, seed, t, seconds) for t in takes]


def samples(spec: dict[str, Any]) -> np.ndarray:
    base = synth_voice(float(spec["f0"]), seconds=float(spec.get("seconds", 2.5)), seed=int(spec["seed"]))
    return take(base, int(spec["take"]) + 100 * int(spec["seed"]))


def recordings(cmd: dict[str, Any]) -> list:
    if "files" in cmd:
        return list(cmd["files"])
    return [(samples(v), SR) for v in cmd["voices"]]


# -- a file barrier --------------------------------------------------------------------------------
def barrier(directory: str, parties: int, who: str, timeout: float = 120.0) -> None:
    """Arrive (create ``directory/who``) and wait until ``parties`` have arrived."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / who).touch()
    deadline = time.monotonic() + timeout
    while len(list(path.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {directory}: only {len(list(path.iterdir()))} of {parties} arrived")
        time.sleep(0.002)


# -- crash injection -------------------------------------------------------------------------------
CRASH_POINTS = {
    "embed": "start of the n-th XVectorEmbedder.embed call",
    "forward": "inside the model's forward pass, during the n-th embed call",
    "before_flush": "the n-th flush holding a new speaker row, before any INSERT",
    "after_flush": "the n-th flush holding a new speaker row, INSERTs sent, change row not yet added",
    "before_commit": "the n-th commit of a change transaction, before its final flush",
    "commit_flushed": "the n-th change transaction: every statement sent, COMMIT not sent",
    "after_commit": "right after the n-th change transaction committed, before anything else",
    "index_write": "before the n-th write of the FAISS index file",
    "index_tmp_half": "half-way through writing the n-th index temp file",
    "index_tmp_full": "n-th index temp file written and fsynced, not yet renamed",
    "sidecar_write": "between the n-th index file rename and its sidecar write",
    "sidecar_tmp_half": "half-way through writing the n-th sidecar temp file",
    "sidecar_tmp_full": "n-th sidecar temp file written and fsynced, not yet renamed",
    "index_saved": "after the n-th sidecar rename, file lock still held",
}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


class _HalfWriter:
    """A file whose first write stops half-way: it writes half the data, makes it durable, dies."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        os.fsync(self._handle.fileno())
        die()
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def install_crash(spec: str) -> None:
    """Arm ``VB_CRASH=point:n``."""
    point, _, n_text = spec.partition(":")
    if point not in CRASH_POINTS:
        raise SystemExit(f"unknown crash point {point!r}; known: {', '.join(CRASH_POINTS)}")
    nth = int(n_text or 1)
    counts: dict[str, int] = {}

    def reached(name: str) -> bool:
        counts[name] = counts.get(name, 0) + 1
        return name == point and counts[name] == nth

    if point in ("embed", "forward"):
        from voicebank.embedding.wavlm import XVectorEmbedder

        original_embed = XVectorEmbedder.embed

        def embed(self, waveforms):
            counts["embed"] = counts.get("embed", 0) + 1
            if counts["embed"] == nth:
                if point == "embed":
                    die()
                import torch

                calls = {"n": 0}

                def count_module_calls(*_):  # die a few module calls into the forward pass
                    calls["n"] += 1
                    if calls["n"] == 5:
                        die()

                torch.nn.modules.module.register_module_forward_hook(count_module_calls)
            return original_embed(self, waveforms)

        XVectorEmbedder.embed = embed
        return

    if point in ("before_flush", "after_flush", "before_commit", "commit_flushed", "after_commit"):
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        from voicebank.store import ChangeRow, SpeakerRow

        pending = {"change": False}

        def holds(session, kind) -> bool:
            return any(isinstance(obj, kind) for obj in session.new)

        @event.listens_for(Session, "before_flush")
        def _before_flush(session, *_):
            if holds(session, SpeakerRow) and reached("before_flush"):
                die()

        @event.listens_for(Session, "after_flush")
        def _after_flush(session, *_):
            if holds(session, SpeakerRow) and reached("after_flush"):
                die()
            if holds(session, ChangeRow) and reached("commit_flushed"):
                die()

        @event.listens_for(Session, "before_commit")
        def _before_commit(session):
            pending["change"] = holds(session, ChangeRow)
            if pending["change"] and reached("before_commit"):
                die()

        @event.listens_for(Session, "after_commit")
        def _after_commit(session):
            if pending["change"]:
                pending["change"] = False
                if reached("after_commit"):
                    die()

        return

    import voicebank.index.file as index_mod

    real_os = index_mod.os
    mode = {"now": None}

    class OsProxy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_os, name)

        def fdopen(self, fd, *args, **kwargs):
            handle = real_os.fdopen(fd, *args, **kwargs)
            return _HalfWriter(handle) if mode["now"] == "half" else handle

        def replace(self, src, dst):
            if mode["now"] == "full":
                die()
            return real_os.replace(src, dst)

    index_mod.os = OsProxy()
    original_write = index_mod._atomic_write

    def atomic_write(path: Path, data: bytes) -> None:
        kind = "sidecar" if str(path).endswith(".json") else "index"
        counts[kind] = counts.get(kind, 0) + 1
        hit = counts[kind] == nth
        if hit and point == f"{kind}_write":
            die()
        if hit and point.startswith(kind + "_tmp_"):
            mode["now"] = point.rsplit("_", 1)[1]
        try:
            original_write(path, data)
        finally:
            mode["now"] = None
        if hit and kind == "sidecar" and point == "index_saved":
            die()

    index_mod._atomic_write = atomic_write


# -- the worker ------------------------------------------------------------------------------------
def _reply_for(bank, cmd: dict[str, Any], who: str) -> dict[str, Any]:
    op = cmd["op"]
    if op == "barrier":
        barrier(cmd["dir"], cmd["n"], who)
        return {"ok": True, "op": op}
    if op == "enroll":
        at = cmd.get("barrier")
        if at and at.get("at", "start") == "start":
            barrier(at["dir"], at["n"], who)
        if at and at.get("at") == "writing":
            # Both racers are past the name pre-check, the embedding and the quality checks, and
            # about to open their write transactions, before either has written anything.
            store = bank._store
            original = type(store).change

            def change(*args, **kwargs):
                barrier(at["dir"], at["n"], who)
                return original(store, *args, **kwargs)

            store.change = change
        try:
            speaker = bank.enroll(cmd["name"], recordings(cmd), metadata=cmd.get("metadata"))
        finally:
            bank._store.__dict__.pop("change", None)
        return {"ok": True, "op": op, "name": speaker.name, "id": speaker.id,
                "sha256": [r.sha256 for r in speaker.recordings]}
    if op == "remove":
        bank.remove(cmd["name"])
        return {"ok": True, "op": op, "name": cmd["name"]}
    if op == "identify":
        result = bank.identify(recordings(cmd)[0], top_k=cmd.get("top_k", 5))
        return {"ok": True, "op": op, **result.to_dict()}
    if op == "verify":
        return {"ok": True, "op": op, **bank.verify(cmd["name"], recordings(cmd)[0]).to_dict()}
    if op == "check":
        return {"ok": True, "op": op, "report": bank.index.check().to_dict()}
    if op == "save":
        bank.index.save()
        return {"ok": True, "op": op}
    if op == "reindex":
        return {"ok": True, "op": op, "count": bank.index.rebuild()}
    if op == "names":
        return {"ok": True, "op": op, "names": [s.name for s in bank.speakers()]}
    raise ValueError(f"unknown op {op!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db")
    parser.add_argument("--model")
    parser.add_argument("--create", action="store_true")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--index-path")
    parser.add_argument("--min-enroll-speech", type=float, help="default: the library's own limit")
    parser.add_argument("--script", help="read commands from this file instead of stdin")
    parser.add_argument("--out", help="write replies to this file instead of stdout")
    parser.add_argument("--name", default=str(os.getpid()), help="who this is, for barriers")
    parser.add_argument("--zygote", action="store_true")
    return parser.parse_args(argv)


def open_bank(db: str, model: str | None, *, create: bool = False, threshold: float | None = None,
              index_path: str | None = None, min_enroll_speech: float | None = None):
    from voicebank import VoiceBank
    from voicebank.audio import AudioLimits

    limits = AudioLimits() if min_enroll_speech is None else AudioLimits(min_enroll_speech_seconds=min_enroll_speech)
    # the tiny random model's scale (conftest.TINY_THRESHOLD) is set for the best-score rule
    bank = VoiceBank.open(db, model, create=create, threshold=threshold, identify_rule="best", index_path=index_path,
                          limits=limits)
    try:
        bank.embed_samples([np.zeros(SR, dtype=np.float32)])  # load the model now, not in the first command
    except BaseException:
        bank.close()
        raise
    return bank


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.zygote:
        return zygote()
    out = open(args.out, "a", buffering=1, encoding="utf-8") if args.out else sys.stdout
    commands = open(args.script, encoding="utf-8") if args.script else sys.stdin

    def emit(data: dict[str, Any]) -> None:
        out.write(json.dumps(data, ensure_ascii=True) + "\n")
        out.flush()

    bank = None
    if args.db:
        bank = open_bank(args.db, args.model, create=args.create, threshold=args.threshold,
                         index_path=args.index_path, min_enroll_speech=args.min_enroll_speech)
    else:  # a pooled worker: opens banks on command; import the heavy parts now
        _preload()
    try:
        if os.environ.get("VB_CRASH"):
            install_crash(os.environ["VB_CRASH"])
        emit({"ready": True, "pid": os.getpid()})
        for line in commands:
            if not line.strip():
                continue
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            try:
                if cmd["op"] == "open":  # {"op": "open", "db", "model", "index_path", "env", ...}
                    if bank is not None:
                        bank, old = None, bank
                        old.close()
                    os.environ.update(cmd.get("env") or {})
                    bank = open_bank(cmd["db"], cmd.get("model"), create=cmd.get("create", False),
                                     threshold=cmd.get("threshold"), index_path=cmd.get("index_path"),
                                     min_enroll_speech=cmd.get("min_enroll_speech"))
                    reply = {"ok": True, "op": "open"}
                elif cmd["op"] == "close":
                    if bank is not None:
                        bank, old = None, bank
                        old.close()
                    reply = {"ok": True, "op": "close"}
                elif bank is None:
                    raise RuntimeError("no bank is open: send an open command first")
                else:
                    reply = _reply_for(bank, cmd, args.name)
            except Exception as exc:  # report and go on: the driver decides what an error means
                reply = {"ok": False, "op": cmd["op"], "error": type(exc).__name__, "message": str(exc),
                         "trace": traceback.format_exc()}
            emit(reply)
    finally:
        if bank is not None:
            bank.close()
    emit({"closed": True})
    return 0


def _preload() -> None:
    """Import what a worker needs, without opening anything (nothing here starts threads or
    connections, so a zygote can fork after it)."""
    import faiss  # noqa: F401
    import sqlalchemy  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoFeatureExtractor, AutoModelForAudioXVector, WavLMForXVector  # noqa: F401

    import voicebank.bank  # noqa: F401
    import voicebank.index.faiss_search  # noqa: F401
    import voicebank.embedding.wavlm  # noqa: F401
    import voicebank.store.schema  # noqa: F401

    try:
        import psycopg  # noqa: F401
        import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401
    except ImportError:
        pass
    from alembic import command  # noqa: F401
    from alembic.runtime import migration  # noqa: F401


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the zygote ends, so no worker outlives a killed test run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def zygote() -> int:
    """Import once, fork a worker per request (see the module docstring)."""
    _preload()

    def say(data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    say({"zygote": "ready", "pid": os.getpid()})
    for line in sys.stdin:
        request = json.loads(line)
        if "fork" in request:
            spec = request["fork"]
            pid = os.fork()
            if pid == 0:  # the child: become a plain worker with its own files
                code = 1
                try:
                    _die_with_parent()
                    null = os.open(os.devnull, os.O_RDONLY)
                    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.dup2(null, 0)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    os.environ.update(spec.get("env", {}))
                    code = main(spec["argv"] + ["--script", spec["script"], "--out", spec["out"]])
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            say({"pid": pid})
        elif "wait" in request:
            _, status = os.waitpid(int(request["wait"]), 0)
            say({"pid": request["wait"], "status": os.waitstatus_to_exitcode(status)})
    return 0


# -- helpers for the tests -------------------------------------------------------------------------
class WorkerDied(AssertionError):
    pass


class Worker:
    """A ``bank_worker.py`` subprocess driven through stdin/stdout, one command at a time."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, encoding="utf-8", bufsize=1, env={**os.environ, **(env or {})},
        )
        self.pid = self.proc.pid
        self.pending = 0  # commands sent and not yet answered
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def read(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerDied(f"worker {self.pid} said nothing for {timeout} s; its log:\n{self.log()}") from None
        if line is None:
            self.proc.wait()
            raise WorkerDied(f"worker {self.pid} ended (exit {self.proc.returncode}); its log:\n{self.log()}")
        reply = json.loads(line)
        if "op" in reply:
            self.pending -= 1
        return reply

    def ready(self) -> "Worker":
        reply = self.read(STARTUP_TIMEOUT)
        assert reply.get("ready"), reply
        return self

    def send(self, **cmd: Any) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        self.pending += 1

    def call(self, timeout: float = REPLY_TIMEOUT, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read(timeout)

    def open(self, db: str, model: str | os.PathLike, **options: Any) -> "Worker":
        """Open a bank in a pooled worker (see ``open_bank`` for the options)."""
        reply = self.call(op="open", db=db, model=str(model), **options)
        assert reply.get("ok") is True, reply
        return self

    def quit(self) -> None:
        self.send(op="quit")
        while "closed" not in self.read():
            pass
        self.proc.wait(timeout=REPLY_TIMEOUT)
        assert self.proc.returncode == 0, self.log()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self._log.close()


def worker_args(db: str, model: str | os.PathLike, *, create: bool = False, threshold: float | None = None,
                index_path: str | os.PathLike | None = None, min_enroll_speech: float | None = None,
                name: str | None = None) -> list[str]:
    argv = ["--db", db, "--model", str(model)]
    if create:
        argv.append("--create")
    if threshold is not None:
        argv += ["--threshold", repr(threshold)]
    if index_path is not None:
        argv += ["--index-path", str(index_path)]
    if min_enroll_speech is not None:
        argv += ["--min-enroll-speech", repr(min_enroll_speech)]
    if name is not None:
        argv += ["--name", name]
    return argv


class Zygote:
    """Client of ``bank_worker.py --zygote``: forks workers that read a script file and write replies
    to a file, so a test can kill them and still read what they had reported."""

    def __init__(self, log_path: Path):
        self._log = open(log_path, "ab")
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, WORKER, "--zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.children: set[int] = set()
        reply = self._read(STARTUP_TIMEOUT)
        assert reply.get("zygote") == "ready", reply

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerDied(f"the zygote said nothing for {timeout} s") from None
        if line is None:
            raise WorkerDied("the zygote ended: " + Path(self.log_path).read_text(errors="replace")[-4000:])
        return json.loads(line)

    def _ask(self, request: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def fork(self, argv: list[str], script: list[dict[str, Any]], workdir: Path,
             env: dict[str, str] | None = None) -> "Child":
        workdir.mkdir(parents=True, exist_ok=True)
        n = len(list(workdir.glob("script-*")))
        paths = {k: workdir / f"{k}-{n}.{ext}" for k, ext in (("script", "jsonl"), ("out", "jsonl"), ("log", "txt"))}
        paths["script"].write_text("".join(json.dumps(c) + "\n" for c in script), encoding="utf-8")
        paths["out"].write_text("")
        reply = self._ask({"fork": {"argv": argv, "env": env or {}, **{k: str(p) for k, p in paths.items()}}})
        self.children.add(reply["pid"])
        return Child(self, reply["pid"], paths["out"], paths["log"])

    def wait(self, pid: int) -> int:
        reply = self._ask({"wait": pid})
        self.children.discard(pid)
        return reply["status"]

    def close(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.wait(pid)
            except Exception:
                pass
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class Child:
    def __init__(self, zygote: Zygote, pid: int, out: Path, log: Path):
        self.zygote, self.pid, self.out, self.log_path = zygote, pid, out, log

    def replies(self) -> list[dict[str, Any]]:
        text = self.out.read_text(encoding="utf-8")
        # Only whole lines: the worker writes a line at a time, but a kill can land mid-write.
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not any(r.get("ready") for r in self.replies()):
            if time.monotonic() > deadline:
                raise WorkerDied(f"child {self.pid} never got ready; log:\n{self.log()}")
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                raise WorkerDied(f"child {self.pid} died before ready; log:\n{self.log()}") from None
            time.sleep(0.01)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        return self.zygote.wait(self.pid)


# -- what SQL must look like after anything --------------------------------------------------------
def consistency_problems(url: str, utterances_per_speaker: int | None = None) -> list[str]:
    """Everything wrong with the bank's tables as a whole: partial speakers, orphans, change rows
    that do not match the speakers, sequence gaps. Empty when the database is consistent."""
    from sqlalchemy import create_engine, text

    from voicebank.store import resolve_url
    from voicebank.vectors import voiceprint

    problems: list[str] = []
    url = resolve_url(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if url.startswith("sqlite"):
                integrity = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
                if integrity != "ok":
                    problems.append(f"sqlite integrity_check: {integrity}")
            speakers = {r[0]: (r[1], r[2]) for r in conn.execute(text("SELECT id, name, voiceprint FROM speakers"))}
            utterances: dict[int, list[np.ndarray]] = {}
            for speaker_id, blob in conn.execute(text("SELECT speaker_id, embedding FROM utterances ORDER BY id")):
                utterances.setdefault(speaker_id, []).append(np.frombuffer(bytes(blob), dtype=np.float32))
            changes = conn.execute(text("SELECT seq, speaker_id, op FROM changes ORDER BY seq, id")).all()
            head = conn.execute(text("SELECT change_seq FROM bank WHERE id = 1")).scalar_one()
    finally:
        engine.dispose()
    for speaker_id, (name, blob) in speakers.items():
        held = utterances.get(speaker_id, [])
        if not held:
            problems.append(f"speaker {name!r} (id {speaker_id}) has no utterances")
        elif utterances_per_speaker is not None and len(held) != utterances_per_speaker:
            problems.append(f"speaker {name!r} has {len(held)} utterances, not {utterances_per_speaker}")
        elif not np.allclose(voiceprint(np.stack(held)), np.frombuffer(bytes(blob), dtype=np.float32), atol=1e-5):
            problems.append(f"speaker {name!r}: the voiceprint is not the mean of its utterances")
    for speaker_id in set(utterances) - set(speakers):
        problems.append(f"{len(utterances[speaker_id])} utterances of speaker id {speaker_id}, which does not exist")
    seqs = sorted({c[0] for c in changes})
    if seqs != list(range(1, head + 1)):
        problems.append(f"change sequence is {head}, but the change rows hold the sequences {seqs}")
    last_op: dict[int, str] = {}
    for _seq, speaker_id, op in changes:
        last_op[speaker_id] = op
    for speaker_id, (name, _) in speakers.items():
        if last_op.get(speaker_id) != "upsert":
            problems.append(f"speaker {name!r} (id {speaker_id}) exists, but its last change is {last_op.get(speaker_id)}")
    for speaker_id, op in last_op.items():
        if op == "upsert" and speaker_id not in speakers:
            problems.append(f"change row upserting speaker id {speaker_id}, which does not exist (and was not deleted)")
        if op == "delete" and speaker_id in speakers:
            problems.append(f"speaker id {speaker_id} is marked deleted but still exists")
    return problems


def table_rows(url: str, skip: tuple[str, ...] = ()) -> dict[str, list[tuple]]:
    """Every row of every table (SQLite or PostgreSQL), sorted, to compare before/after."""
    from sqlalchemy import MetaData, create_engine, select

    from voicebank.store import resolve_url

    engine = create_engine(resolve_url(url))
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
                    for name, table in sorted(meta.tables.items()) if name not in skip}
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())

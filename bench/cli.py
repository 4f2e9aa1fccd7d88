"""How long the ``voicebank`` command takes, from process start to its answer, on this machine.

Banks are built in a temporary folder: one on the resemblyzer backend and one on the tests' tiny
random-weight WavLM (saved there; nothing is downloaded), three speakers each. The probe is 4 s
of the first recording of ../shared/data/speech (synthetic speech where that folder is absent).
Each command runs ``--runs`` times as a fresh process; the table gives the median wall time, the
median CPU time (user + system: less disturbed by other processes on a busy machine), and the
median seconds spent importing modules (from ``python -X importtime``, in separate runs), with the
packages that take the most. ``--baseline DIR`` runs the same commands with another checkout's
code (e.g. the commit before a change) in the same session, interleaved run by run, and adds the
ratio. Writes everything to ``--out``.

    python bench/cli.py [--runs 5] [--baseline /path/to/other/checkout] [--only resemblyzer]
                        [--out bench/results/cli.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SR, build_tiny_wavlm, synth_voice  # noqa: E402  (sets HF offline)

from _env import describe, machine  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech"
_ENTRY = "import sys; from voicebank.cli import main; main(sys.argv[1:], prog_name='voicebank')"
_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def build(folder: Path) -> dict[str, Path]:
    """Two banks (resemblyzer, tiny WavLM) of three speakers and a 4 s probe; their paths."""
    import soundfile as sf

    from voicebank import VoiceBank, runtime

    # this process is the benchmark's: no progress bars, and no warnings that the tiny random
    # WavLM's speakers sound alike (they do: its weights are random)
    runtime.configure(log_level=logging.ERROR)

    folders = sorted({f.parent for f in SPEECH.rglob("*.flac")})[:3]
    speakers: dict[str, list[Path]] = {}
    for k in range(3):
        paths = []
        for i in range(3):
            path = folder / f"s{k}-{i}.wav"
            if len(folders) == 3:
                wave, rate = sf.read(sorted(folders[k].glob("*.flac"))[i], dtype="float32")
                sf.write(path, wave[: 6 * rate], rate)
            else:
                sf.write(path, synth_voice(110.0 + 60 * k, seconds=6.0, seed=10 * k + i), SR)
            paths.append(path)
        speakers[f"speaker{k}"] = paths
    probe = folder / "probe.wav"
    wave, rate = sf.read(speakers["speaker0"][0], dtype="float32")
    sf.write(probe, wave[: 4 * rate], rate)
    tiny = build_tiny_wavlm(folder / "tiny-wavlm")
    out = {"probe": probe, "tiny": tiny}
    for name, model in (("resemblyzer", "resemblyzer"), ("wavlm", str(tiny))):
        db = folder / f"{name}.db"
        with VoiceBank.open(db, model, create=True) as bank:
            for speaker, paths in speakers.items():
                bank.enroll(speaker, paths, allow_inconsistent=True)
        out[name] = db
    return out


def commands(paths: dict[str, Path]) -> dict[str, list[str]]:
    probe, res, wavlm = str(paths["probe"]), str(paths["resemblyzer"]), str(paths["wavlm"])
    return {
        "--help": ["--help"],
        "list": ["--db", res, "list"],
        "identify (resemblyzer)": ["--db", res, "identify", probe],
        "identify (tiny WavLM)": ["--db", wavlm, "identify", probe],
        "verify (resemblyzer)": ["--db", res, "verify", "speaker0", probe],
    }


def run_once(code: Path, args: list[str], cwd: Path, importtime: bool = False) -> dict:
    """One process: wall and CPU seconds, and with ``importtime`` the import seconds by package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBANK_")}
    env.update(PYTHONPATH=str(code), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # `-m voicebank` without __main__.py in an older baseline: the same entry point, as -c
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", _ENTRY, *args]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # identify/verify exit 1 on "no match" / "rejected"
        raise SystemExit(f"voicebank {' '.join(args)} failed ({proc.returncode}):\n{err[-2000:]}")
    result = {"wall": wall}
    if importtime:
        by_package: Counter = Counter()  # each module's own time, to the package it belongs to
        for m in map(_IMPORT.match, err.splitlines()):
            if m:
                by_package[m.group(4).split(".")[0]] += int(m.group(1)) / 1e6
        result["imports"] = dict(by_package)
    return result


def timed(code: Path, args: list[str], cwd: Path) -> dict:
    """Wall and CPU (user + system) seconds of one process, measured by the kernel."""
    before = os.times()
    result = run_once(code, args, cwd)
    after = os.times()
    result["cpu"] = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return result


def measure(codes: dict[str, Path], cmds: dict[str, list[str]], cwd: Path, runs: int) -> dict:
    """Per checkout and command: median wall, CPU and import seconds of ``runs`` processes,
    checkouts interleaved run by run so that load from elsewhere falls on them alike."""
    raw: dict = {c: {name: {"wall": [], "cpu": [], "import": [], "packages": Counter()} for name in cmds} for c in codes}
    for name, args in cmds.items():
        for code in codes.values():  # warm the page cache and Python's bytecode caches
            run_once(code, args, cwd)
        for _ in range(runs):
            for label, code in codes.items():
                t = timed(code, args, cwd)
                i = run_once(code, args, cwd, importtime=True)
                entry = raw[label][name]
                entry["wall"].append(t["wall"])
                entry["cpu"].append(t["cpu"])
                entry["import"].append(sum(i["imports"].values()))
                entry["packages"].update({k: v / runs for k, v in i["imports"].items()})
    out: dict = {}
    for label in codes:
        out[label] = {}
        for name in cmds:
            e = raw[label][name]
            out[label][name] = {
                "wall_s": round(statistics.median(e["wall"]), 3), "cpu_s": round(statistics.median(e["cpu"]), 3),
                "import_s": round(statistics.median(e["import"]), 3),
                "imports_by_package_s": {k: round(v, 3) for k, v in e["packages"].most_common(8)},
                "runs": {"wall": [round(x, 3) for x in e["wall"]], "cpu": [round(x, 3) for x in e["cpu"]]},
            }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="processes per command (the median is reported)")
    p.add_argument("--baseline", type=Path, help="another checkout of voicebank to run the same commands with")
    p.add_argument("--only", help="run only the commands whose name contains this (e.g. resemblyzer)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli.json")
    args = p.parse_args()
    codes = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    info = machine()
    print(describe(info))
    with tempfile.TemporaryDirectory(prefix="voicebank-cli-bench-") as tmp:
        folder = Path(tmp)
        paths = build(folder)
        cmds = {k: v for k, v in commands(paths).items() if not args.only or args.only in k}
        results = measure(codes, cmds, folder, args.runs)
    header = f"{'command':<24} {'wall s':>7} {'cpu s':>6} {'import s':>8}"
    if args.baseline:
        header += f" | {'baseline wall':>13} {'cpu':>6} {'import':>6} {'wall ratio':>10}"
    print(f"\nmedians of {args.runs} processes each, process start to answer; this: {ROOT}"
          + (f", baseline: {codes['baseline']}" if args.baseline else ""))
    print(header)
    for name in cmds:
        r = results["this"][name]
        line = f"{name:<24} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} {r['import_s']:8.2f}"
        if args.baseline:
            b = results["baseline"][name]
            line += f" | {b['wall_s']:13.2f} {b['cpu_s']:6.2f} {b['import_s']:6.2f} {b['wall_s'] / r['wall_s']:9.2f}x"
        print(line)
    for label in codes:
        print(f"\nimport seconds by package ({label}, mean over runs):")
        for name in cmds:
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(results[label][name]["imports_by_package_s"].items())[:6])
            print(f"  {name:<24} {top}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "command": " ".join(sys.argv), "runs": args.runs,
                                    "checkouts": {k: str(v) for k, v in codes.items()}, "results": results}, indent=1))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()

"""Speaker-recognition quality on speakers voicebank was never tuned on (resemblyzer backend).

For each corpus (``shared/data/speech``, ``shared/data/speechocean762-dev``) and a telephone
version of each (probes through 8 kHz 8-bit mu-law; enrollment and calibration stay wideband),
in two folds: the bank holds one half of the speakers and is calibrated exactly as
``voicebank calibrate`` does it; the other half, never enrolled and never seen by calibration,
are the unknown persons. Measured on the held-out people: verification false accepts and
rejects at the calibrated threshold; identification, calibrated and measured under each decision
rule (``margin``, 2 x best - second best cosine, what new banks decide by; ``best``, the best
cosine, banks migrated from before it): unknown-person false alarms promised against measured,
correct identification against the best any threshold on the same statistic could do; open-set
scores compared; and before that, what the enrollment checks catch and which recordings and
non-speech sounds ``audio.load`` refuses. Then the two duration sweeps (EER against probe length
and against enrollment length; wideband). Prints the machine, the versions and a table per
section; writes every raw figure to JSON. Embeddings are cached in bench/results/quality-cache/.

    python bench/quality.py [--data-root ../shared/data] [--out bench/results/quality.json] [--markdown]

Protocol details: bench/quality_protocol.py (folds, calibration, measurement),
bench/quality_checks.py (enrollment checks, refusals), bench/quality_scores.py (item 6 scores),
bench/quality_sweeps.py (probe and enrollment length).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")  # pkg_resources deprecation from webrtcvad (via resemblyzer)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_banks as banks  # noqa: E402
import quality_checks as checks  # noqa: E402
import quality_data as data  # noqa: E402
import quality_protocol as protocol  # noqa: E402
import quality_report as report  # noqa: E402
import quality_report_sweeps as report_sweeps  # noqa: E402
import quality_scores as scores  # noqa: E402
import quality_sweeps as sweeps  # noqa: E402
from _env import describe, machine  # noqa: E402
from voicebank.channel import TELEPHONE, WIDEBAND  # noqa: E402
from voicebank.embedding import load_embedder  # noqa: E402
from voicebank.policy import CHECK_OFFSETS, default_threshold, enrollment_checks  # noqa: E402

# suffix of the measured corpus's name -> (what enrollment and calibration embed, what the probes are):
# wideband; a telephone call (8 kHz mu-law) decided as voicebank decides it, in the telephone channel
# (the call and the enrollments through its simulated line); and the same call decided as before
# channels, against the wideband voiceprints with the wideband calibration
CHANNELS = {"": (data.WIDEBAND, data.WIDEBAND), "-tel": (data.SIMULATED, "tel+sim"),
            "-tel-before": (data.WIDEBAND, data.TELEPHONE)}
DECIDED = {"": WIDEBAND, "-tel": TELEPHONE, "-tel-before": WIDEBAND}  # the channel each is calibrated in


def run_corpus(corpus: data.Corpus, embedder, cache: Path, limits: tuple[float, float], res: dict,
               sweep: bool = True, reference=None) -> None:
    by_speaker = corpus.by_speaker()
    emb = {}
    for channel in sorted({c for pair in CHANNELS.values() for c in pair}):
        emb[channel], res["embedding"].setdefault(corpus.name, {})[channel] = data.embeddings(
            corpus, channel, embedder, cache)
    for channel in (data.WIDEBAND, data.TELEPHONE):
        res["refusals"].setdefault(corpus.name, {})[channel] = checks.refusals(corpus, channel, data.waveform, cache)
    wide = emb[data.WIDEBAND]
    consistency, duplicate = limits
    seconds = data.speech_seconds(corpus, cache)  # of the wideband recordings: calls' speech taken as the same
    res["enrollment_checks"][corpus.name] = {
        **checks.too_little_speech(by_speaker, seconds),
        **checks.consistency_checks(by_speaker, wide, (emb[data.SIMULATED], emb["tel+sim"]), consistency),
        **checks.duplicate_checks(by_speaker, wide, protocol.folds(by_speaker, wide, wide), duplicate)}
    for suffix, (enrolled, probe) in CHANNELS.items():
        name = corpus.name + suffix
        folds = protocol.folds(by_speaker, emb[enrolled], emb[probe], seconds)
        calibs = [protocol.calibrate(f, reference, DECIDED[suffix]) for f in folds]
        measured = [protocol.measure(f, c) for f, c in zip(folds, calibs)]
        res["calibration"][name] = calibs
        res["held_out"][name] = {
            "folds": measured, "summed": protocol.summed(measured, calibs), "eer": protocol.pooled_eer(folds),
            "groups": tally_groups(corpus, [protocol.outcomes(f, c) for f, c in zip(folds, calibs)]),
            "split": [{"bank": f.bank, "genuine_rows": f.genuine_rows, "unknown_rows": f.unknown_rows,
                       "cohort": 0 if f.cohort is None else len(f.cohort)} for f in folds]}
        res["scores"][name] = scores.compare(folds)
    if sweep:
        res["sweeps"][corpus.name] = sweeps.sweep(corpus, wide, embedder, cache)


def references(args: argparse.Namespace, embedder) -> dict:
    """Per corpus present, the reference set of strangers built from the other corpora (the shipped
    one holds them all; a corpus is never measured against a reference set that holds its people)."""
    import reference_set

    corpora = {n: c for n in data.CORPORA if (c := data.read_corpus(n, args.data_root)) is not None}
    parts = {n: reference_set.cached(c, embedder, args.cache) for n, c in corpora.items()}
    return {n: reference_set.merge([p for m, p in parts.items() if m != n]) for n in corpora if len(parts) > 1}


def run_banks(args: argparse.Namespace, embedder, duplicate: float, refs: dict) -> dict:
    """The bank-size and channel protocol (quality_banks) over every corpus present, each with the
    reference set built from the others."""
    corpora = {n: c for n in data.CORPORA if (c := data.read_corpus(n, args.data_root)) is not None}
    cached: dict = {}

    def embeddings(corpus: data.Corpus, channel: str) -> np.ndarray:
        if (corpus.name, channel) not in cached:
            cached[corpus.name, channel] = data.embeddings(corpus, channel, embedder, args.cache)[0]
        return cached[corpus.name, channel]

    return banks.run(corpora, embeddings, refs, duplicate, draws=args.draws,
                     seconds=lambda corpus: data.speech_seconds(corpus, args.cache))


def tally_groups(corpus: data.Corpus, per_fold: list[dict]) -> dict:
    """Verification rejects and false accepts, and per rule and target rate correct identifications
    and unknown false alarms, per group of the corpus."""
    decisions = [f"{rule}_{rate}" for rule in protocol.RULES for rate in report.RATES]
    out: dict = defaultdict(lambda: defaultdict(int))
    for o in per_fold:
        for row, d in o["genuine"].items():
            g = out[data.group(corpus, row)]
            if "rejected" in d:
                g["genuine_verify"] += 1
                g["rejected"] += d["rejected"]
            for rule in protocol.RULES:
                for r in report.RATES:
                    g[f"genuine_{rule}_{r}"] += (rule, r) in d
                    g[f"correct_{rule}_{r}"] += d.get((rule, r), False)
        for row, d in o["unknown"].items():
            g = out[data.group(corpus, row)]
            g["pairs"] += d.get("pairs", 0)
            g["false_accepts"] += d.get("false_accepts", 0)
            for rule in protocol.RULES:
                for r in report.RATES:
                    g[f"unknown_{rule}_{r}"] += (rule, r) in d
                    g[f"fa_{rule}_{r}"] += d.get((rule, r), False)
    return {k: {**{f"{a}_{x}": 0 for a in ("genuine", "correct", "unknown", "fa") for x in decisions},
                "genuine_verify": 0, "rejected": 0, "pairs": 0, "false_accepts": 0, **v} for k, v in out.items()}


def choose_winner(res: dict) -> dict:
    """Correct identification at 1% unknown false alarms, per score and corpus, and which wins."""
    corpora = list(res["scores"])
    rates: dict = {}
    for corpus, methods in res["scores"].items():
        for name, m in methods.items():
            if "correct" in m["0.01"]:
                rates.setdefault(name, {})[corpus] = m["0.01"]["correct"] / m["genuine"]
    everywhere = {n: float(np.mean(list(r.values()))) for n, r in rates.items() if len(r) == len(corpora)}
    best = {c: max((r[c], n) for n, r in rates.items() if c in r)[1] for c in corpora}
    verdict, paired = "", {}
    if everywhere:
        top = max(everywhere, key=everywhere.get)
        paired = {k: sum(res["scores"][c][top]["0.01"].get(f"{k}_vs_cosine", 0) for c in corpora)
                  for k in ("gained", "lost")}
        verdict = (f"Highest mean over all {len(corpora)} corpora: {top} ({report.pct(everywhere[top])}, cosine "
                   f"{report.pct(everywhere.get('cosine'))}; over all corpora it identifies {paired['gained']} genuine "
                   f"probes cosine misses and misses {paired['lost']} cosine identifies). Best per corpus: "
                   + "; ".join(f"{c}: {n}" for c, n in best.items()) + ".")
    return {"corpora": corpora, "rates": rates, "mean": everywhere, "best_per_corpus": best,
            "paired_vs_cosine": paired, "verdict": verdict}


def environment(embedder) -> dict:
    import importlib.metadata as md

    import torch

    import voicebank

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "absent"

    return {"machine": machine(torch=True),
            "versions": {"python": platform.python_version(), "voicebank": voicebank.__version__,
                         "numpy": np.__version__, "scipy": version("scipy"), "torch": torch.__version__,
                         "resemblyzer": version("resemblyzer"), "silero-vad": version("silero-vad"),
                         "librosa": version("librosa"), "soxr": version("soxr"), "model": embedder.model_id},
            "command": [sys.executable] + sys.argv}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                   help="folder holding speech/ and speechocean762-dev/ (each with manifest.csv); a corpus "
                        "that is absent is skipped")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "quality-cache",
                   help="where embeddings and audio.load refusals are cached")
    p.add_argument("--corpus", action="append", choices=sorted(data.CORPORA),
                   help="measure only this corpus (repeatable); default: every corpus present")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--no-sweeps", action="store_true",
                   help="skip the probe- and enrollment-length sweeps (their first run embeds cut recordings: "
                        "minutes; later runs read the cache)")
    p.add_argument("--no-banks", action="store_true",
                   help="skip the bank-size and channel section (its first run embeds every recording through the "
                        "telephone codecs, which needs sox: minutes)")
    p.add_argument("--draws", type=int, default=banks.DRAWS, help="banks drawn per corpus and size")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch.set_num_threads(N) before embedding (default: torch's own choice)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    report.MARKDOWN = args.markdown
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    embedder = load_embedder("resemblyzer")
    consistency, duplicate = enrollment_checks(default_threshold(embedder))
    res: dict = {**environment(embedder), "data_root": str(args.data_root.resolve()),
                 "thresholds": {"default": default_threshold(embedder), "check_offsets": list(CHECK_OFFSETS),
                                "consistency": consistency, "duplicate": duplicate},
                 "protocol": {"min_recordings": protocol.MIN_RECORDINGS, "enroll": protocol.N_ENROLL,
                              "verify_far": protocol.VERIFY_FAR, "identify_rates": list(protocol.IDENTIFY_RATES),
                              "identify_rules": list(protocol.RULES), "score_targets": list(scores.TARGETS),
                              "sweeps": {"enroll": sweeps.N_ENROLL, "probe_seconds": list(sweeps.PROBE_SECONDS),
                                         "enroll_seconds": list(sweeps.ENROLL_SECONDS)}},
                 "skipped": [], "embedding": {}, "refusals": {}, "enrollment_checks": {}, "calibration": {},
                 "held_out": {}, "scores": {}, "sweeps": {}}
    print(describe(res["machine"], res["versions"]))
    refs = references(args, embedder)
    for name in args.corpus or data.CORPORA:
        corpus = data.read_corpus(name, args.data_root)
        if corpus is None:
            print(f"skipped {name}: no manifest.csv under {args.data_root / data.CORPORA[name]}")
            res["skipped"].append(name)
            continue
        run_corpus(corpus, embedder, args.cache, (consistency, duplicate), res, sweep=not args.no_sweeps,
                   reference=refs.get(name))
    if not res["held_out"]:
        sys.exit(f"no corpus found under {args.data_root}; pass --data-root DIR")
    if not args.no_banks:
        res["banks"] = run_banks(args, embedder, duplicate, refs)
    res["held_out_gates"] = checks.held_out_gates(res["enrollment_checks"])
    res["not_speech"] = checks.not_speech()
    res["winner"] = choose_winner(res)
    for section in (report.embeddings, report.refusals, report.not_speech, report.enrollment, report.held_out_gates,
                    report.calibration,
                    report.verification, report.identification, report.groups, report.scores, report.winner,
                    report_sweeps.probe_length, report_sweeps.enrollment_length, report_sweeps.banks):
        section(res)
    res["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=_plain))
    print(f"\nwrote {args.out} ({res['wall_s']:.0f} s; load average {os.getloadavg()[0]:.1f})")


def _plain(x):
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.floating):
        return float(x)
    raise TypeError(f"not JSON: {type(x)}")


if __name__ == "__main__":
    main()

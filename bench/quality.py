"""Speaker-identification quality on real speech, with the resemblyzer (GE2E) backend.

Runs the product's own path (``audio.load`` -> ``embed_recordings`` -> ``voiceprint`` -> cosine or
AS-norm) over the 240 recordings in ``shared/data/speech`` and measures verification (EER, minDCF),
closed- and open-set identification, the effect of recording length, and how portable thresholds
are across corpora. Prints a table per section and writes every raw figure to JSON.

    python bench/quality.py [--data ../shared/data/speech] [--out bench/results/quality.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")  # pkg_resources deprecation from webrtcvad (via resemblyzer)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _env import describe  # noqa: E402
from voicebank.audio import AudioLimits, load, speech_seconds  # noqa: E402
from voicebank.embedding import default_threshold, embed_recordings, load_embedder  # noqa: E402
from voicebank.scoring import asnorm, eer, min_dcf, threshold_at_far  # noqa: E402
from voicebank.vectors import voiceprint  # noqa: E402

SR = 16_000
N_ENROLL = 3
# Permissive limits so every file is measured; product-default failures are counted separately.
LIMITS = AudioLimits(min_seconds=0.0, min_speech_seconds=0.0)
PROBE_CROPS = (1.0, 1.5, 2.0, 3.0, 5.0)
ENROLL_TOTALS = (3.0, 4.5, 6.0, 9.0, 15.0)
EXTERNAL_TOP_N = (10, 25, 50)
FA_TARGETS = (0.01, 0.001)


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """Recordings in manifest order, their audio and embeddings, and the experiment's split."""

    rows: list[dict]
    audio: list  # voicebank.audio.Audio, one per row
    emb: np.ndarray  # (n_rows, 256) from embed_recordings
    speakers: list[str]  # multi-recording speakers, manifest order
    enroll: list[list[int]]  # row indices of each speaker's first N_ENROLL recordings
    probes: np.ndarray  # row indices of the other recordings of those speakers
    probe_lab: np.ndarray  # index into speakers for each probe
    unknowns: np.ndarray  # row indices of the single-recording speakers


def read_manifest(data_dir: Path) -> list[dict]:
    with open(data_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def split(rows: list[dict]) -> tuple[list[str], list[list[int]], np.ndarray, np.ndarray, np.ndarray]:
    by_speaker: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_speaker.setdefault(r["speaker"], []).append(i)
    speakers = [s for s, idx in by_speaker.items() if len(idx) > 1]
    enroll = [by_speaker[s][:N_ENROLL] for s in speakers]
    probes = [(i, k) for k, s in enumerate(speakers) for i in by_speaker[s][N_ENROLL:]]
    unknowns = [idx[0] for idx in by_speaker.values() if len(idx) == 1]
    return (speakers, enroll, np.array([p for p, _ in probes]), np.array([k for _, k in probes]),
            np.array(unknowns))


def embed(embedder, waves: list[np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = embed_recordings(embedder, waves)
    return np.asarray(out, dtype=np.float64), time.perf_counter() - start


def load_data(data_dir: Path, embedder) -> tuple[Data, dict]:
    rows = read_manifest(data_dir)
    start = time.perf_counter()
    audio = [load(data_dir / r["path"], SR, LIMITS) for r in rows]
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    model_id = embedder.model_id  # loads the model outside the timed embedding
    model_s = time.perf_counter() - start
    emb, embed_s = embed(embedder, [a.samples for a in audio])
    total = sum(a.duration for a in audio)
    stats = {"files": len(rows), "audio_seconds": total, "load_wall_s": load_s, "model_load_wall_s": model_s,
             "embed_wall_s": embed_s, "x_real_time": total / embed_s, "model_id": model_id}
    return Data(rows, audio, emb, *split(rows)), stats


# ----------------------------------------------------------------------------- scoring helpers


def voiceprints(d: Data) -> np.ndarray:
    return np.stack([voiceprint(d.emb[idx]) for idx in d.enroll]).astype(np.float64)


def trials(s_probe: np.ndarray, lab: np.ndarray, s_unknown: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Target: probe vs own voiceprint. Non-target: probe vs the others, plus unknowns vs all."""
    own = np.zeros_like(s_probe, dtype=bool)
    own[np.arange(len(lab)), lab] = True
    non = [s_probe[~own]] + ([s_unknown.ravel()] if s_unknown is not None else [])
    return s_probe[own], np.concatenate(non)


def verification(target: np.ndarray, nontarget: np.ndarray) -> dict:
    rate, thr = eer(target, nontarget)
    at_far = threshold_at_far(target, nontarget, 0.01)
    return {"n_target": int(target.size), "n_nontarget": int(nontarget.size), "eer": rate,
            "eer_threshold": thr, "min_dcf_0.01": min_dcf(target, nontarget, 0.01)[0],
            "min_dcf_0.05": min_dcf(target, nontarget, 0.05)[0], "far1_threshold": at_far.threshold,
            "far1_far": at_far.far, "far1_frr": at_far.frr, "mean_target": float(target.mean()),
            "mean_nontarget": float(nontarget.mean())}


def asnorm_bank(s: np.ndarray, vv: np.ndarray, top_n: int = 100) -> np.ndarray:
    """AS-norm of (n, k) scores against k voiceprints, the cohort of column j being the other
    k - 1 voiceprints (``vv`` = voiceprint-vs-voiceprint cosines)."""
    out = np.empty_like(s)
    for j in range(s.shape[1]):
        others = np.arange(s.shape[1]) != j
        out[:, j] = asnorm(s[:, [j]], s[:, others], vv[[j]][:, others], top_n)[:, 0]
    return out


def closed_set(s_probe: np.ndarray, lab: np.ndarray) -> float:
    return float(np.mean(s_probe.argmax(axis=1) == lab))


def open_set(s_probe: np.ndarray, lab: np.ndarray, s_unknown: np.ndarray, fa_target: float) -> dict:
    """Correct-identification rate at the smallest threshold whose unknown false-alarm rate is at
    most ``fa_target`` (an unknown false-alarms when its best score reaches the threshold)."""
    best_u = s_unknown.max(axis=1)
    cands = np.unique(np.concatenate([best_u, s_probe.max(axis=1)]))
    cands = np.append(cands, np.nextafter(cands[-1], np.inf))
    fa = (best_u[None, :] >= cands[:, None]).mean(axis=1)
    t = float(cands[int(np.argmax(fa <= fa_target + 1e-12))])
    return {"fa_target": fa_target, "allowed_false_alarms": int(np.floor(fa_target * best_u.size + 1e-9)),
            **open_set_at(s_probe, lab, s_unknown, t)}


def open_set_at(s_probe: np.ndarray, lab: np.ndarray, s_unknown: np.ndarray, t: float) -> dict:
    top, hit = s_probe.argmax(axis=1), s_probe.max(axis=1) >= t
    best_u = s_unknown.max(axis=1)
    return {"threshold": t, "n_unknown": int(best_u.size), "false_alarms": int(np.sum(best_u >= t)),
            "fa_rate": float(np.mean(best_u >= t)), "correct_rate": float(np.mean((top == lab) & hit)),
            "misidentified_rate": float(np.mean((top != lab) & hit)), "rejected_rate": float(np.mean(~hit))}


# ----------------------------------------------------------------------------- sections


def raw_pairs(d: Data) -> dict:
    idx = np.concatenate(d.enroll + [d.probes])
    lab = np.array([d.rows[i]["speaker"] for i in idx])
    g = d.emb[idx] @ d.emb[idx].T
    iu, ju = np.triu_indices(len(idx), 1)
    same = lab[iu] == lab[ju]
    return {"recordings": int(len(idx)), **verification(g[iu, ju][same], g[iu, ju][~same])}


@dataclass
class Scores:
    """Score matrices of one scoring method: probes and unknowns against the voiceprints."""

    probe: np.ndarray
    unknown: np.ndarray


def bank_scores(d: Data, v: np.ndarray) -> dict[str, Scores]:
    cos = Scores(d.emb[d.probes] @ v.T, d.emb[d.unknowns] @ v.T)
    vv = v @ v.T
    return {"cosine": cos, "asnorm": Scores(asnorm_bank(cos.probe, vv), asnorm_bank(cos.unknown, vv))}


def external_scores(d: Data, v: np.ndarray) -> tuple[dict[str, Scores], dict]:
    cohort, unknown = d.unknowns[0::2], d.unknowns[1::2]  # even / odd in manifest order
    c = d.emb[cohort]
    probe, unk = d.emb[d.probes], d.emb[unknown]
    out = {"cosine": Scores(probe @ v.T, unk @ v.T)}
    for n in EXTERNAL_TOP_N:
        out[f"asnorm-ext-top{n}"] = Scores(asnorm(probe @ v.T, probe @ c.T, v @ c.T, n),
                                           asnorm(unk @ v.T, unk @ c.T, v @ c.T, n))
    return out, {"cohort_rows": cohort.tolist(), "unknown_rows": unknown.tolist()}


def enrollment(d: Data, scores: dict[str, Scores]) -> dict:
    return {name: verification(*trials(s.probe, d.probe_lab, s.unknown)) for name, s in scores.items()}


def identification(d: Data, scores: dict[str, Scores], default_t: float) -> tuple[dict, dict]:
    closed = {name: closed_set(s.probe, d.probe_lab) for name, s in scores.items()}
    opened = {name: [open_set(s.probe, d.probe_lab, s.unknown, fa) for fa in FA_TARGETS]
              for name, s in scores.items()}
    cos = scores["cosine"]
    opened["cosine@default"] = [{"fa_target": None, "allowed_false_alarms": None,
                                 **open_set_at(cos.probe, d.probe_lab, cos.unknown, default_t)}]
    return closed, opened


def crop(wave: np.ndarray, seconds: float) -> np.ndarray:
    return wave[: int(round(seconds * SR))]


def probe_crops(d: Data, embedder, v: np.ndarray) -> tuple[list[dict], float]:
    """Probes cut to their first T s; non-targets are those crops against the other voiceprints."""
    out, wall = [], 0.0
    for t in PROBE_CROPS:
        keep = np.array([d.audio[i].duration >= t for i in d.probes])
        waves = [crop(d.audio[i].samples, t) for i in d.probes[keep]]
        emb, s = embed(embedder, waves)
        wall += s
        target, non = trials(emb @ v.T, d.probe_lab[keep], None)
        speech = [speech_seconds(w, SR) for w in waves]
        out.append({"seconds": t, "probes": int(keep.sum()), "mean_probe_speech_s": float(np.mean(speech)),
                    "min_probe_speech_s": float(np.min(speech)), **verification(target, non)})
    return out, wall


def enroll_crops(d: Data, embedder) -> tuple[list[dict], float]:
    out, wall = [], 0.0
    for total in ENROLL_TOTALS:
        waves = [crop(d.audio[i].samples, total / N_ENROLL) for idx in d.enroll for i in idx]
        emb, s = embed(embedder, waves)
        wall += s
        v = np.stack([voiceprint(emb[k * N_ENROLL:(k + 1) * N_ENROLL]) for k in range(len(d.enroll))])
        target, non = trials(d.emb[d.probes] @ v.T, d.probe_lab, d.emb[d.unknowns] @ v.T)
        used = [len(w) / SR for w in waves]
        out.append({"total_seconds": total, "mean_used_seconds": float(np.sum(used) / len(d.enroll)),
                    "short_recordings": int(sum(u < total / N_ENROLL - 1e-3 for u in used)),
                    **verification(target, non)})
    return out, wall


def speech_ratio(d: Data) -> dict:
    ratio = np.array([a.speech_seconds / a.duration for a in d.audio])
    speech = np.array([a.speech_seconds for a in d.audio])
    default = AudioLimits()
    fails = [d.rows[i]["path"] for i, a in enumerate(d.audio)
             if a.speech_seconds < default.min_speech_seconds or a.duration < default.min_seconds]
    by_corpus = {}
    for corpus in dict.fromkeys(r["corpus"] for r in d.rows):
        r = ratio[[row["corpus"] == corpus for row in d.rows]]
        by_corpus[corpus] = {"min": float(r.min()), "median": float(np.median(r))}
    return {"ratio_min": float(ratio.min()), "ratio_median": float(np.median(ratio)),
            "ratio_max": float(ratio.max()), "speech_s_min": float(speech.min()),
            "speech_s_median": float(np.median(speech)), "by_corpus": by_corpus,
            "fail_default_limits": fails}


def portability(d: Data, scores: dict[str, Scores]) -> dict:
    """EER and FAR-1% thresholds from LibriSpeech-only vs VCTK-only enrollment-style trials, and
    what each threshold does on the other corpus."""
    corpus = np.array([d.rows[idx[0]]["corpus"].split("-")[0] for idx in d.enroll])
    out = {}
    for name, s in scores.items():
        sets = {c: subset_trials(d, s, corpus, c) for c in ("librispeech", "vctk")}
        sets["pooled"] = trials(s.probe, d.probe_lab, s.unknown)
        res = {c: verification(*tn) for c, tn in sets.items()}
        for c, other in (("librispeech", "vctk"), ("vctk", "librispeech")):
            for key in ("eer_threshold", "far1_threshold"):
                res[c][f"{key}_on_{other}"] = rates_at(*sets[other], res[c][key])
        out[name] = res
    return out


def subset_trials(d: Data, s: Scores, corpus: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    cols = np.flatnonzero(corpus == which)
    keep = np.isin(d.probe_lab, cols)
    remap = np.full(len(corpus), -1)
    remap[cols] = np.arange(len(cols))
    unknown = s.unknown[:, cols] if which == "librispeech" else None  # the unknowns are LibriSpeech
    return trials(s.probe[keep][:, cols], remap[d.probe_lab[keep]], unknown)


def rates_at(target: np.ndarray, nontarget: np.ndarray, t: float) -> dict:
    return {"far": float(np.mean(nontarget >= t)), "frr": float(np.mean(target < t))}


# ----------------------------------------------------------------------------- printing


def table(title: str, header: list[str], rows: list[list], note: str = "") -> None:
    cells = [[fmt(c) for c in r] for r in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title}")
    for k, r in enumerate(cells):
        print("  ".join(c.rjust(w) if k and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if note:
        print(note)


def fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 100 else f"{x:.1f}"
    return str(x)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def verification_rows(results: dict) -> list[list]:
    return [[name, r["n_target"], r["n_nontarget"], pct(r["eer"]), r["min_dcf_0.01"], r["min_dcf_0.05"],
             r["eer_threshold"], r["far1_threshold"], pct(r["far1_frr"])] for name, r in results.items()]


VERIF_HEADER = ["scoring", "targets", "non-targets", "EER", "minDCF.01", "minDCF.05", "thr@EER",
                "thr@FAR1%", "FRR@FAR1%"]


def print_embedding(stats: dict) -> None:
    table("1. Embeddings (audio.load + embed_recordings, each file once)",
          ["files", "audio s", "load s", "model load s", "embed s", "x real time"],
          [[stats["files"], stats["audio_seconds"], stats["load_wall_s"], stats["model_load_wall_s"],
            stats["embed_wall_s"], f"{stats['x_real_time']:.1f}x"]],
          f"model: {stats['model_id']}; torch threads: {stats['torch_threads']}; "
          f"flush denormals: {'on' if stats['flush_denormals'] else 'off'}")


def print_raw(r: dict) -> None:
    table("2. Raw model: single-pair cosine, all pairs of the 14 multi-recording speakers",
          VERIF_HEADER, verification_rows({"cosine pairs": r}))


def print_enrollment(res: dict, ext: dict, raw_eer: float) -> None:
    table("3. Enrollment: voiceprint of first 3 recordings; 98 probes + 100 unknown speakers",
          VERIF_HEADER, verification_rows(res))
    ratio = res["cosine"]["eer"] / raw_eer
    verdict = "PASS" if ratio <= 0.8 else "FAIL"
    print(f"voiceprint EER / raw pair EER = {ratio:.3f} (target <= 0.8: {verdict}); "
          "asnorm cohort = the other 13 voiceprints, top-N 13")
    table("3b. External cohort: 50 single-recording speakers as cohort, the other 50 as unknowns",
          VERIF_HEADER, verification_rows(ext))


def print_identification(closed: dict, opened: dict) -> None:
    table("4. Closed-set top-1 identification of the 98 probes (14 enrolled)",
          ["scoring", "top-1 accuracy"], [[k, pct(v)] for k, v in closed.items()])
    rows = [[name, "-" if r["fa_target"] is None else pct(r["fa_target"]), r["n_unknown"],
             "-" if r["allowed_false_alarms"] is None else r["allowed_false_alarms"], r["false_alarms"],
             r["threshold"], pct(r["correct_rate"]), pct(r["misidentified_rate"]), pct(r["rejected_rate"])]
            for name, rs in opened.items() for r in rs]
    c1 = opened["cosine"][0]["correct_rate"]
    table("5. Open-set identification (unknowns never enrolled)",
          ["scoring", "FA target", "unknowns", "FA allowed", "FA", "threshold", "correct", "misident",
           "rejected"], rows,
          "With 100 unknowns, FA <= 0.1% means zero false alarms (with 50, FA <= 1% also means zero).\n"
          "cosine@default: the backend's default threshold (embedding.default_threshold), not tuned here.\n"
          f"cosine correct at FA 1%: {pct(c1)} (target >= 97%: {'PASS' if c1 >= 0.97 else 'FAIL'})")


def print_duration(probes: list[dict], full: dict, enrolls: list[dict], sr: dict) -> None:
    table("6a. Probe length: first T s of each probe at least T s long, vs full voiceprints "
          "(non-targets: the crops vs the other 13 voiceprints)",
          ["T s", "probes", "speech s mean", "speech s min", "EER", "thr@EER", "mean target",
           "mean non-target"],
          [[f"{r['seconds']:g}", r["probes"], r["mean_probe_speech_s"], r["min_probe_speech_s"],
            pct(r["eer"]), r["eer_threshold"], r["mean_target"], r["mean_nontarget"]] for r in probes]
          + [["full", full["n_target"], "", "", pct(full["eer"]), full["eer_threshold"], full["mean_target"],
              full["mean_nontarget"]]])
    table("6b. Enrollment length: first 3 recordings each cropped to T/3 s, full-length probes",
          ["T s", "used s/speaker", "short recs", "EER", "thr@EER", "mean target"],
          [[f"{r['total_seconds']:g}", r["mean_used_seconds"], r["short_recordings"], pct(r["eer"]),
            r["eer_threshold"], r["mean_target"]] for r in enrolls])
    rows = [["all", sr["ratio_min"], sr["ratio_median"]]]
    rows += [[c, v["min"], v["median"]] for c, v in sr["by_corpus"].items()]
    table("6c. speech_seconds / duration from audio.load", ["corpus", "min", "median"], rows,
          f"speech seconds: min {sr['speech_s_min']:.2f}, median {sr['speech_s_median']:.2f}; "
          f"files failing default AudioLimits: {len(sr['fail_default_limits'])}")


def print_portability(port: dict) -> None:
    rows = []
    for name, res in port.items():
        for c, r in res.items():
            cross = [cross_cell(r, key) for key in ("eer_threshold", "far1_threshold")]
            rows.append([name, c, r["n_target"], r["n_nontarget"], pct(r["eer"]), r["eer_threshold"],
                         r["far1_threshold"], pct(r["far1_frr"]), *cross])
    table("7. Threshold portability (enrollment-style trials per corpus; unknowns are LibriSpeech)",
          ["scoring", "trials", "targets", "non-tgt", "EER", "thr@EER", "thr@FAR1%", "FRR@FAR1%",
           "thr@EER on other: FAR/FRR", "thr@FAR1% on other: FAR/FRR"], rows,
          "VCTK has 84 non-target trials (no VCTK unknowns): FAR <= 1% there means zero false accepts;\n"
          "where a corpus separates perfectly, both its thresholds sit just above its highest non-target.")


def cross_cell(r: dict, key: str) -> str:
    other = next((k for k in r if k.startswith(key + "_on_")), None)
    return f"{pct(r[other]['far'])} / {pct(r[other]['frr'])}" if other else "-"


# ----------------------------------------------------------------------------- main


def environment() -> dict:
    import torch

    import voicebank

    return {"machine": {"platform": platform.platform(), "processor": cpu_model(),
                        "cpu_count": os.cpu_count(), "torch_threads": torch_threads(),
                        "load_average": os.getloadavg()},
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "torch": torch.__version__, "voicebank": voicebank.__version__},
            "command": [sys.executable] + sys.argv}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "speech")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    p.add_argument("--flush-denormals", action="store_true",
                   help="torch.set_flush_denormal(True) before embedding: resemblyzer zero-pads short input, "
                        "and denormal arithmetic in its LSTM makes recordings under ~1.6 s several times "
                        "slower on x86 CPUs. Off by default so timings are the product's own.")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch.set_num_threads(N) before embedding (default: torch's own choice, as the "
                        "product runs). 1 is far faster when other processes load the CPUs.")
    return p.parse_args()


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def configure_torch(args: argparse.Namespace) -> None:
    import torch

    if args.flush_denormals:
        torch.set_flush_denormal(True)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)


def main() -> None:
    args = parse_args()
    if not (args.data / "manifest.csv").is_file():
        sys.exit(f"no speech data at {args.data} (expected manifest.csv there); pass --data DIR")
    start = time.perf_counter()
    configure_torch(args)
    embedder = load_embedder("resemblyzer")
    d, stats = load_data(args.data, embedder)
    stats.update(flush_denormals=args.flush_denormals, torch_threads=torch_threads())
    env = environment()
    print(describe(env["machine"], env["versions"]))
    print_embedding(stats)
    raw = raw_pairs(d)
    print_raw(raw)
    v = voiceprints(d)
    scores = bank_scores(d, v)
    ext, ext_split = external_scores(d, v)
    enr, ext_res = enrollment(d, scores), enrollment(d, ext)
    print_enrollment(enr, ext_res, raw["eer"])
    closed, opened = identification(d, {**scores, **{f"ext50/{k}": s for k, s in ext.items()}},
                                    default_threshold(embedder))
    print_identification(closed, opened)
    pc, pc_wall = probe_crops(d, embedder, v)
    pc_full = verification(*trials(scores["cosine"].probe, d.probe_lab, None))
    ec, ec_wall = enroll_crops(d, embedder)
    sr = speech_ratio(d)
    print_duration(pc, pc_full, ec, sr)
    port = portability(d, {**scores, "asnorm-ext-top50": ext["asnorm-ext-top50"]})
    print_portability(port)
    stats.update(crop_embed_wall_s=pc_wall + ec_wall, total_wall_s=time.perf_counter() - start)
    result = {**environment(), "data": str(args.data.resolve()), "embedding": stats, "raw_pairs": raw,
              "enrollment": enr, "enrollment_ratio_to_raw": enr["cosine"]["eer"] / raw["eer"],
              "external_cohort": {"split": ext_split, "results": ext_res}, "closed_set": closed,
              "open_set": opened, "probe_crops": pc, "probe_full_length": pc_full, "enroll_crops": ec,
              "speech_ratio": sr, "portability": port,
              "split": {"speakers": d.speakers, "enroll_rows": d.enroll, "probe_rows": d.probes.tolist(),
                        "unknown_rows": d.unknowns.tolist()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out} (total {stats['total_wall_s']:.0f} s, of which crops "
          f"{stats['crop_embed_wall_s']:.0f} s; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

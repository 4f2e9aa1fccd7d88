"""Speaker-embedding speed: the WavLM model card's usage against voicebank's embedder, same audio.

The reference is the model card's usage, one utterance per call, float32: feature extractor ->
``WavLMForXVector`` -> ``embeddings`` -> L2 normalize. voicebank's embedder (``XVectorEmbedder``,
its fast path unless ``VOICEBANK_FAST=0``) embeds the same utterances through its public
``embed``. Both run in one process on the same synthetic mix of utterance lengths (2-12 s, or
real recordings with ``--audio``), interleaved chunk by chunk so that load from other processes
falls on both alike; the table gives x-real-time, utterances/s, their ratio, the minimum cosine
between voicebank's embeddings and the reference's, and peak memory. A second section starts from
files on disk and compares decoding and embedding one recording at a time with voicebank's
pipeline (decoding threads running ahead of the model, batches across recordings). A third embeds
1, 5 and 10 minutes of audio through ``embed_recordings`` (windows) and shows its peak memory.

Without ``--model`` the model is the full microsoft/wavlm-base-plus-sv architecture
(``WavLMConfig()``) with random weights, saved to a temporary directory and loaded from there as a
checkpoint would be: speed does not depend on weight values, and nothing is downloaded.

    python bench/embed.py [--device cpu|cuda] [--model DIR] [--utterances N] [--chunk N]
                          [--audio 'GLOB'] [--files N] [--long-minutes 1,5,10] [--threads N] [--also-fp32]
                          [--also-int8]
                          [--out bench/results/embed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from _env import describe  # noqa: E402
from _env import machine as describe_machine  # noqa: E402
from embed_audio import SR, build_random_model, speechlike, utterances  # noqa: E402
from embed_files import from_files  # noqa: E402
from embed_measure import PeakMemory, cosines, reference_usage, sync  # noqa: E402

from voicebank.embedding import embed_recordings  # noqa: E402
from voicebank.embedding.wavlm import XVectorEmbedder, compute_precision  # noqa: E402

# ----------------------------------------------------------------------------- the sections


def speed(args, model_dir: str, waves: list[np.ndarray]) -> dict:
    """Reference and voicebank on the same utterances, interleaved chunk by chunk."""
    device = args.device
    reference = reference_usage(model_dir, device)
    fast = XVectorEmbedder(model_dir, device=device)
    variants = {"voicebank": fast}
    if args.also_fp32:
        variants["voicebank fp32"] = XVectorEmbedder(model_dir, device=device, precision="fp32")
    if args.also_int8:
        variants["voicebank int8"] = XVectorEmbedder(model_dir, device=device, precision="int8")
    # warm up: first calls pay for allocator growth, oneDNN kernel creation, CUDA context
    warm = waves[: min(2, len(waves))]
    for w in warm:
        reference(w)
    for emb in variants.values():
        emb.embed(warm)
    sync(device)

    chunks = [list(range(i, min(i + args.chunk, len(waves)))) for i in range(0, len(waves), args.chunk)]
    seconds = {"reference": [], **{name: [] for name in variants}}
    peaks = {name: 0 for name in seconds}
    ref_out = np.zeros((len(waves), fast.dimension), np.float32)
    outs = {name: np.zeros_like(ref_out) for name in variants}
    for k, chunk in enumerate(chunks):
        order = ["reference", *variants] if k % 2 == 0 else [*variants, "reference"]
        for name in order:
            with PeakMemory(device) as peak:
                start = time.perf_counter()
                if name == "reference":
                    for i in chunk:
                        ref_out[i] = reference(waves[i])
                else:
                    outs[name][chunk] = variants[name].embed([waves[i] for i in chunk])
                sync(device)
                seconds[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], peak.peak_bytes)
        audio = sum(len(waves[i]) for i in chunk) / SR
        print(
            f"  chunk {k + 1}/{len(chunks)}: {audio:6.1f} s of audio, "
            + ", ".join(f"{n} {audio / seconds[n][-1]:.1f}x" for n in seconds),
            flush=True,
        )

    audio_seconds = sum(len(w) for w in waves) / SR
    chunk_audio = [sum(len(waves[i]) for i in c) / SR for c in chunks]
    rows = {}
    for name in seconds:
        total = sum(seconds[name])
        rows[name] = {
            "seconds": total,
            "x_real_time": audio_seconds / total,
            "utterances_per_s": len(waves) / total,
            "peak_memory_mb": peaks[name] / 2**20,
            "chunk_x_real_time": [a / s for a, s in zip(chunk_audio, seconds[name])],
        }
        if name != "reference":
            cos = cosines(outs[name], ref_out)
            rows[name]["speedup"] = sum(seconds["reference"]) / total
            rows[name]["chunk_speedups"] = [r / s for r, s in zip(seconds["reference"], seconds[name])]
            rows[name]["median_chunk_speedup"] = float(np.median(rows[name]["chunk_speedups"]))
            rows[name]["min_cosine"] = float(cos.min())
            rows[name]["mean_cosine"] = float(cos.mean())
            rows[name]["compute_dtype"] = variants[name].compute_dtype
            rows[name]["fast_path"] = variants[name].fast
    return {"utterances": len(waves), "audio_seconds": audio_seconds, "chunk": args.chunk, "results": rows}


def long_recordings(args, model_dir: str) -> list[dict]:
    """1, 5, 10 ... minutes through embed_recordings: memory stays flat as length grows."""
    embedder = XVectorEmbedder(model_dir, device=args.device)
    embedder.embed([speechlike(3.0, seed=1)])  # load and warm up outside the measurement
    out = []
    for minutes in args.long_minutes:
        wave = np.concatenate([speechlike(60.0, seed=2000 + m) for m in range(int(np.ceil(minutes)))])
        wave = wave[: int(minutes * 60 * SR)]
        with PeakMemory(args.device) as peak:
            start = time.perf_counter()
            emb = embed_recordings(embedder, [wave])
            sync(args.device)
            elapsed = time.perf_counter() - start
        row = {
            "minutes": minutes,
            "seconds": elapsed,
            "x_real_time": minutes * 60 / elapsed,
            "peak_memory_mb": peak.peak_bytes / 2**20,
            "input_mb": wave.nbytes / 2**20,
            "norm": float(np.linalg.norm(emb[0])),
        }
        out.append(row)
        print(f"  {minutes:g} min: {row['x_real_time']:.1f}x real time, peak +{row['peak_memory_mb']:.0f} MiB "
              f"(the waveform itself: {row['input_mb']:.0f} MiB)", flush=True)
        del wave
    return out


# ----------------------------------------------------------------------------- report


def machine(device: str) -> dict:
    """_env's description, with the versions and the device this benchmark depends on."""
    import torch
    import transformers

    info = {**describe_machine(torch=True), "transformers": transformers.__version__, "numpy": np.__version__,
            "device": device, "load_average": list(os.getloadavg())}
    # the fast path's precision here under VOICEBANK_PRECISION (default auto), and why
    precision = (os.environ.get("VOICEBANK_PRECISION") or "auto").strip().lower()
    dtype, why = compute_precision(precision, device, torch)
    info["precision"] = {"setting": precision, "path": str(dtype).replace("torch.", ""), "why": why}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def print_table(report: dict) -> None:
    m = report["machine"]
    print()
    print(describe(m))
    print(f"model: {report['model']}; load average at start {', '.join(f'{x:.1f}' for x in m['load_average'])}")
    p = m["precision"]
    print(f"voicebank's path on this machine (precision {p['setting']}): {p['path']} matmuls ({p['why']})")
    s = report["speed"]
    print(f"\n1. {s['utterances']} utterances, {s['audio_seconds']:.0f} s of audio (2-12 s each), "
          f"interleaved in chunks of {s['chunk']}")
    head = f"{'':34s} {'x real time':>11s} {'utt/s':>7s} {'speedup':>8s} {'median':>7s} {'min cos':>9s} {'peak MiB':>9s}"
    print(head)
    print("-" * len(head))
    for name, r in s["results"].items():
        label = "model card (fp32, one at a time)" if name == "reference" else f"{name} ({r['compute_dtype']})"
        speedup = f"{r['speedup']:7.2f}x" if "speedup" in r else f"{'1.00x':>8s}"
        median = f"{r['median_chunk_speedup']:6.2f}x" if "speedup" in r else f"{'':7s}"
        cos = f"{r['min_cosine']:9.6f}" if "min_cosine" in r else f"{'-':>9s}"
        print(f"{label:34s} {r['x_real_time']:11.1f} {r['utterances_per_s']:7.2f} {speedup} {median} {cos} "
              f"{r['peak_memory_mb']:9.0f}")
    if report.get("files"):
        f = report["files"]
        print(f"\n2. From files: {f['recordings']} recordings ({f['format']}), {f['audio_seconds']:.0f} s of audio; "
              f"decoding alone {f['decode_x_real_time']:.0f}x real time; pipeline: {f['decoders']} decoding threads, "
              f"chunks of {f['chunk_seconds']:g} s")
        head = f"{'':34s} {'x real time':>11s} {'speedup':>8s} {'min cos':>9s}"
        print(head)
        print("-" * len(head))
        for name, r in f["results"].items():
            print(f"{name:34s} {r['x_real_time']:11.1f} {r['speedup']:7.2f}x {r['min_cosine_vs_one_at_a_time']:9.6f}")
    if report.get("long"):
        print("\n3. Long recordings through embed_recordings (30 s windows), voicebank")
        head = f"{'minutes':>8s} {'x real time':>11s} {'peak MiB':>9s} {'waveform MiB':>13s}"
        print(head)
        print("-" * len(head))
        for r in report["long"]:
            print(f"{r['minutes']:8g} {r['x_real_time']:11.1f} {r['peak_memory_mb']:9.0f} {r['input_mb']:13.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", help="a local *ForXVector checkpoint directory (default: random weights)")
    parser.add_argument("--utterances", type=int, help="default 24 on cpu, 1024 on cuda")
    parser.add_argument("--chunk", type=int, help="utterances per interleaved chunk, given to voicebank's embed in "
                        "one call (default 8 on cpu, 256 on cuda)")
    parser.add_argument("--audio", help="glob of real recordings to cut utterances from (default: synthetic)")
    parser.add_argument("--files", type=int, help="recordings for the from-files section (default: as many as "
                        "--utterances; 0 skips it)")
    parser.add_argument("--long-minutes", default="1,5,10", help="comma-separated; empty to skip")
    parser.add_argument("--also-fp32", action="store_true", help="also time voicebank's fast path in float32")
    parser.add_argument("--also-int8", action="store_true", help="also time voicebank's fast path with int8 linear "
                        "layers (the path of CPUs without native bf16)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads(N) for everything (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "embed.json"))
    args = parser.parse_args()
    args.long_minutes = [float(x) for x in args.long_minutes.split(",") if x.strip()]
    args.utterances = args.utterances or (1024 if args.device == "cuda" else 24)
    args.chunk = args.chunk or (256 if args.device == "cuda" else 8)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    from voicebank import runtime

    runtime.configure(args.threads)  # as the CLI and the server run it: threads at most the usable cores
    waves = utterances(args.utterances, args.audio)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(build_random_model(Path(tmp) / "wavlm-random"))
        report = {"machine": machine(args.device), "model": args.model or "WavLMConfig() random weights"}
        report["inputs"] = args.audio or "synthetic speech-like"
        print(f"speed: {len(waves)} utterances on {args.device} ...", flush=True)
        report["speed"] = speed(args, model_dir, waves)
        report["machine"]["torch_threads"] = torch.get_num_threads()  # as the embedder left them
        report["machine"]["threads_option"] = args.threads
        files = len(waves) if args.files is None else args.files
        if files:
            print(f"from files: {files} recordings ...", flush=True)
            report["files"] = from_files(args, model_dir, (waves * (1 + files // len(waves)))[:files], Path(tmp))
        if args.long_minutes:
            print("long recordings ...", flush=True)
            report["long"] = long_recordings(args, model_dir)
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

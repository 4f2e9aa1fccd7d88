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
import gc
import glob
import json
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicebank.embedding import embed_recordings  # noqa: E402
from voicebank.embedding.wavlm import XVectorEmbedder, compute_precision  # noqa: E402
from voicebank.runtime import usable_cores  # noqa: E402

SR = 16_000


# ----------------------------------------------------------------------------- inputs


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of a wobbling pitch under a syllable-rate envelope,
    with pauses and a little noise (what a random-weight model sees as "speech")."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 300)
    pitch = f0 * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) + 0.03 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    wave = sum(np.sin(k * phase + rng.uniform(0, 6)) * rng.uniform(0.3, 1) / k for k in range(1, 20))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t + rng.uniform(0, 6))
    pauses = (np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6)) > -0.7).astype(float)
    wave = 0.3 * wave * syllables * pauses / np.max(np.abs(wave))
    return (wave + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def utterances(count: int, audio_glob: str | None, seed: int = 0) -> list[np.ndarray]:
    """``count`` utterances of 2-12 s: synthetic, or cut from the recordings matching ``audio_glob``."""
    rng = np.random.default_rng(seed)
    lengths = rng.uniform(2.0, 12.0, size=count)
    if not audio_glob:
        return [speechlike(float(s), seed=1000 + i) for i, s in enumerate(lengths)]
    from voicebank.audio import AudioLimits, load

    files = sorted(glob.glob(audio_glob, recursive=True))
    if not files:
        raise SystemExit(f"no file matches {audio_glob}")
    limits = AudioLimits(min_seconds=0.0, min_speech_seconds=0.0)
    out: list[np.ndarray] = []
    for i, seconds in enumerate(lengths):
        wave = load(files[i % len(files)], SR, limits=limits).samples
        want = int(seconds * SR)
        while len(wave) < want:  # short file: append the next one
            wave = np.concatenate([wave, load(files[(i + len(out) + 1) % len(files)], SR, limits=limits).samples])
        out.append(np.ascontiguousarray(wave[:want], dtype=np.float32))
    return out


def build_random_model(directory: Path) -> Path:
    """The full wavlm-base-plus-sv architecture (``WavLMConfig()``), random weights, saved as a checkpoint."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(0)
    WavLMForXVector(WavLMConfig()).eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False, return_attention_mask=True
    ).save_pretrained(directory)
    return directory


# ----------------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak memory above the level at entry: resident set size on the CPU (sampled every 2 ms from
    /proc/self/statm), allocated tensor memory on CUDA."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self.rss()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self.rss())

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak, self.rss()) - self._base


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def reference_usage(model_dir: str, device: str):
    """The model card's usage, one utterance per call, float32."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMForXVector

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = WavLMForXVector.from_pretrained(model_dir).eval().to(device)

    def embed(wave: np.ndarray) -> np.ndarray:
        inputs = extractor(wave, sampling_rate=SR, padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            embeddings = model(**inputs).embeddings
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1).cpu()
        return embeddings[0].numpy()

    return embed


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


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


def from_files(args, model_dir: str, waves: list[np.ndarray], tmp: Path) -> dict:
    """Recordings on disk (48 kHz 16-bit WAV, so decoding includes resampling to 16 kHz), three
    ways: decode and embed one at a time (what eval, enroll and cohort did before the pipeline);
    decode everything, then embed in chunks (batching without overlap); and voicebank's pipeline
    (``pipeline.embed_stream``: decoding threads run ahead of the model, chunks batched)."""
    import librosa
    import soundfile as sf

    from voicebank import pipeline
    from voicebank.audio import AudioLimits, load

    files = []
    for i, wave in enumerate(waves):
        path = tmp / f"utt{i:05d}.wav"
        sf.write(path, librosa.resample(wave, orig_sr=SR, target_sr=48_000), 48_000, subtype="PCM_16")
        files.append(path)
    audio_seconds = sum(len(w) for w in waves) / SR
    limits = AudioLimits(min_seconds=0.0, min_speech_seconds=0.0)
    embedder = XVectorEmbedder(model_dir, device=args.device)
    chunk = embedder.chunk_seconds

    def decode(path):
        return load(path, SR, limits)

    def embed(ws):
        return embed_recordings(embedder, ws)

    def one_by_one():
        return np.concatenate([embed([decode(f).samples]) for f in files])

    def decode_then_embed():
        audios = [decode(f).samples for f in files]
        out, start = [], 0
        while start < len(audios):  # the pipeline's chunks, without the overlap
            stop, size = start, 0
            while stop < len(audios) and size < chunk * SR:
                size, stop = size + len(audios[stop]), stop + 1
            out.append(embed(audios[start:stop]))
            start = stop
        return np.concatenate(out)

    def pipelined():
        return np.stack([e.embedding for e in pipeline.embed_stream(files, decode, embed, SR, chunk,
                                                                    pipeline.decoders(args.device == "cuda"))])

    one_by_one()  # warm up: model load, kernels, page cache for the files
    start = time.perf_counter()
    for f in files:
        decode(f)
    decode_seconds = time.perf_counter() - start
    ways = {"one at a time": one_by_one, "decode all, then embed": decode_then_embed, "pipeline": pipelined}
    rows, outs = {}, {}
    for name, run in ways.items():
        start = time.perf_counter()
        outs[name] = run()
        sync(args.device)
        elapsed = time.perf_counter() - start
        rows[name] = {"seconds": elapsed, "x_real_time": audio_seconds / elapsed}
        print(f"  {name}: {rows[name]['x_real_time']:.1f}x real time", flush=True)
    base = rows["one at a time"]["seconds"]
    for name, row in rows.items():
        row["speedup"] = base / row["seconds"]
        row["min_cosine_vs_one_at_a_time"] = float(cosines(outs[name], outs["one at a time"]).min())
    return {"recordings": len(files), "audio_seconds": audio_seconds, "format": "WAV, 48 kHz, 16-bit",
            "chunk_seconds": chunk, "decoders": pipeline.decoders(args.device == "cuda"), "decode_only_seconds": decode_seconds,
            "decode_x_real_time": audio_seconds / decode_seconds, "results": rows}


# ----------------------------------------------------------------------------- report


def machine(device: str) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": device,
        "load_average": os.getloadavg(),
    }
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
    print(f"machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['usable_cores']} usable), torch threads {m['torch_threads']}, "
          f"avx512_bf16 {m['avx512_bf16']}, device {m['device']}" + (f" ({m['gpu']})" if "gpu" in m else ""))
    print(f"versions: python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, numpy {m['numpy']}")
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

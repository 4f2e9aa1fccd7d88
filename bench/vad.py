"""What speech detection costs next to the embedding, on this machine's CPU.

On the same recordings, one at a time as ``audio.load`` meets them: silero-vad as voicebank runs
it (``voicebank.audio.speech_seconds``), and the embedders' ``embed``: resemblyzer (when
installed; also all recordings in one call, as enrollment makes it), the tests' tiny random-weight WavLM, and the full wavlm-base-plus-sv architecture
with random weights (speed does not depend on weight values; nothing is downloaded). The audio is
the first recordings of ../shared/data/speech, or synthetic speech from tests/conftest.py where
that folder is absent. Prints the machine and a table of compute seconds per second of audio (per
recording the fastest of ``--repeat`` passes, all measures interleaved) and writes it to ``--out``.

    python bench/vad.py [--seconds 120] [--repeat 3] [--threads N] [--out bench/results/vad.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SR, build_tiny_wavlm, synth_voice  # noqa: E402  (sets HF offline)

from _env import describe, machine  # noqa: E402
from voicebank.audio import AudioLimits, load, speech_seconds  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech"


def recordings(seconds: float) -> tuple[list[np.ndarray], str]:
    """Whole recordings adding up to about ``seconds`` of audio, and where they come from."""
    out: list[np.ndarray] = []
    files = sorted(SPEECH.rglob("*.flac"))[::3]
    source = f"{SPEECH} (every 3rd file)" if files else "synthetic speech (tests/conftest.py synth_voice)"
    k = 0
    while sum(len(w) for w in out) < seconds * SR:
        if files:
            out.append(load(files[k % len(files)], SR, AudioLimits(min_seconds=0.0, min_speech_seconds=0.0)).samples)
        else:
            out.append(synth_voice(100.0 + 23.0 * (k % 12), seconds=float(2 + k % 9), seed=k))
        k += 1
    return out, source


def costs(steps: dict, waves: list[np.ndarray], repeat: int) -> dict[str, float]:
    """Seconds each step takes on all ``waves``, one at a time: per recording the fastest of
    ``repeat`` passes, the steps interleaved recording by recording so that load from other
    processes falls on all of them alike."""
    for step in steps.values():
        step(waves[0][: 2 * SR])  # warm up: lazy loads, first-call compilation
    best = {name: np.full(len(waves), np.inf) for name in steps}
    for _ in range(repeat):
        for i, wave in enumerate(waves):
            for name, step in steps.items():
                start = time.perf_counter()
                step(wave)
                best[name][i] = min(best[name][i], time.perf_counter() - start)
    return {name: float(times.sum()) for name, times in best.items()}


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="seconds of audio to time (default: 120)")
    p.add_argument("--repeat", type=int, default=3, help="passes over the audio per measure (default: 3)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vad.json")
    args = p.parse_args()
    import importlib.metadata

    import torch

    from voicebank.embedding import load_embedder
    from voicebank.embedding.wavlm import XVectorEmbedder

    if args.threads:
        torch.set_num_threads(args.threads)  # a benchmark is a host: it may choose
    waves, source = recordings(args.seconds)
    audio_s = sum(len(w) for w in waves) / SR
    host = machine(torch=True)  # after --threads: the threads it measures with
    versions = {"torch": torch.__version__, "silero-vad": importlib.metadata.version("silero-vad")}
    print(describe(host, versions))
    print(f"audio: {len(waves)} recordings, {audio_s:.1f} s, from {source}\n")

    steps = {"silero-vad (speech_seconds)": lambda w: speech_seconds(w, SR)}
    try:
        resemblyzer = load_embedder("resemblyzer", device="cpu")
        resemblyzer.embed([waves[0][:SR]])
        steps["resemblyzer embed"] = lambda w: resemblyzer.embed([w])
    except Exception as exc:  # the optional extra is not installed
        print(f"(resemblyzer skipped: {exc})")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = XVectorEmbedder(str(build_tiny_wavlm(Path(tmp) / "tiny")), device="cpu")
        steps["tiny WavLM embed (tests)"] = lambda w: tiny.embed([w])
        full_dir = Path(tmp) / "full"
        from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

        WavLMForXVector(WavLMConfig()).eval().save_pretrained(full_dir)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False,
                                 return_attention_mask=True).save_pretrained(full_dir)
        full = XVectorEmbedder(str(full_dir), device="cpu")
        steps["wavlm-base-plus-sv embed"] = lambda w: full.embed([w])
        rows = costs(steps, waves, args.repeat)
    if "resemblyzer embed" in steps:  # the way enrollment and eval call it: many recordings in one call
        rows["resemblyzer embed, all at once"] = min(_timed(lambda: resemblyzer.embed(waves)) for _ in range(args.repeat))

    vad_s = rows["silero-vad (speech_seconds)"]
    table = [{"what": what, "seconds": round(s, 3), "seconds_per_audio_second": round(s / audio_s, 5),
              "x_real_time": round(audio_s / s, 1), "vad_over_this": round(vad_s / s, 3)} for what, s in rows.items()]
    print(f"{'':30} {'s per audio s':>14} {'x real time':>12} {'VAD / this':>11}")
    for row in table:
        print(f"{row['what']:30} {row['seconds_per_audio_second']:14.5f} {row['x_real_time']:12.1f} "
              f"{row['vad_over_this']:11.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": host, "versions": versions, "audio_seconds": round(audio_s, 2),
                                    "source": source, "rows": table}, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()

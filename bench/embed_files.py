"""bench/embed.py's second section: embedding recordings from files on disk, one at a time, decoded first
then batched, and through voicebank's pipeline.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from embed_audio import SR
from embed_measure import cosines, sync

from voicebank.embedding import embed_recordings
from voicebank.embedding.wavlm import XVectorEmbedder


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

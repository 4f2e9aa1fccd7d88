"""bench/quality.py's data: the corpora, the telephone channel, and embeddings cached on disk.

Each recording is decoded and embedded once per channel with the product's ``embed_recordings``;
the embeddings are kept in ``bench/results/quality-cache/`` under a name made of the corpus, the
channel and the model id, and written after every chunk, so an interrupted first run resumes and
later runs read them in a second.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 16_000
WIDEBAND, TELEPHONE = "wide", "tel"
# More telephone channels, for measuring on codecs voicebank does not simulate: ``sim`` is the
# product's own simulation (voicebank.channel.telephone: what enrollment embeds through), ``gsm``
# (GSM 06.10 full rate) and ``amr`` (AMR-NB at 12.2 kbit/s) are real codecs, run by sox.
SIMULATED, GSM, AMR = "sim", "gsm", "amr"
# Other simulated lines, only to compare with the product's (bench/channel.py): ``g712`` adds G.712's
# 300-3400 Hz band filter (4th-order Butterworth) before the mu-law codec; ``lp8`` is the 8 kHz band
# limit alone, no codec.
G712, LOWPASS = "g712", "lp8"
CHUNK = 40  # recordings embedded between two writes of the cache

# name -> (folder under --data-root, manifest columns kept besides path and speaker)
CORPORA = {"speech": "speech", "speechocean": "speechocean762-dev"}


@dataclass
class Corpus:
    """One corpus in manifest order: ``paths`` absolute, ``speakers`` one per recording."""

    name: str
    root: Path
    paths: list[Path]
    speakers: list[str]
    rows: list[dict]

    def by_speaker(self) -> dict[str, list[int]]:
        """Each speaker's recording indices, speakers in order of first appearance."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.speakers):
            out.setdefault(s, []).append(i)
        return out


def read_corpus(name: str, data_root: Path) -> Corpus | None:
    """The corpus, or None when its manifest is absent (the corpus is then skipped)."""
    root = data_root / CORPORA[name]
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        return None
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    return Corpus(name, root, [root / r["path"] for r in rows], [r["speaker"] for r in rows], rows)


def decode(path: Path) -> np.ndarray:
    """float32 mono samples at 16 kHz in [-1, 1], as ``voicebank.audio.load`` makes them (soundfile,
    channels averaged, soxr_hq resampling, clipped), without its speech detector: the embeddings
    must not depend on a detector that is being replaced."""
    import soundfile as sf

    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1).astype(np.float32)
    if rate != SR:
        import librosa

        samples = librosa.resample(samples, orig_sr=rate, target_sr=SR, res_type="soxr_hq")
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def telephone(samples: np.ndarray) -> np.ndarray:
    """A narrowband telephone channel: 16 kHz -> 8 kHz, 8-bit mu-law (G.711-style, mu = 255) coded
    and decoded, -> 16 kHz again (soxr_hq both ways). No 300 Hz high-pass, no level change, no
    packet loss: only the band limit and the codec's quantization."""
    import librosa

    low = np.clip(librosa.resample(samples, orig_sr=SR, target_sr=8_000, res_type="soxr_hq"), -1.0, 1.0)
    coded = librosa.mu_compress(low, mu=255, quantize=True)
    decoded = librosa.mu_expand(coded, mu=255, quantize=True).astype(np.float32)
    return np.clip(librosa.resample(decoded, orig_sr=8_000, target_sr=SR, res_type="soxr_hq"), -1.0, 1.0
                   ).astype(np.float32)


def codec(samples: np.ndarray, kind: str) -> np.ndarray:
    """``samples`` (16 kHz) coded and decoded by sox with a telephone codec (``gsm`` or ``amr``)
    at 8 kHz, back at 16 kHz, the same length. Needs sox with its codec formats (Debian:
    sox libsox-fmt-all)."""
    import shutil
    import subprocess
    import tempfile

    import soundfile as sf

    if shutil.which("sox") is None:
        raise SystemExit("the gsm and amr channels need sox (apt-get install sox libsox-fmt-all)")
    with tempfile.TemporaryDirectory() as tmp:
        src, coded, back = Path(tmp) / "in.wav", Path(tmp) / f"coded.{'gsm' if kind == GSM else 'amr-nb'}", Path(tmp) / "out.wav"
        sf.write(src, samples, SR, subtype="PCM_16")
        options = ["-C", "7"] if kind == AMR else []
        subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", *options, str(coded)], check=True, capture_output=True)
        subprocess.run(["sox", str(coded), "-r", str(SR), "-b", "16", str(back)], check=True, capture_output=True)
        out, _ = sf.read(back, dtype="float32")
    fitted = np.zeros_like(samples)
    fitted[: min(len(out), len(samples))] = out[: len(samples)]
    return fitted


def simulated_line(samples: np.ndarray, band: bool, mu_law: bool) -> np.ndarray:
    """A telephone line voicebank does not simulate: 8 kHz, with G.712's band filter and/or mu-law."""
    from scipy.signal import butter, sosfilt

    from voicebank.decode import resample

    low = resample(samples, SR, 8_000)
    if band:
        low = sosfilt(butter(4, (300.0, 3400.0), btype="bandpass", fs=8_000, output="sos"), low).astype(np.float32)
    low = np.clip(low, -1.0, 1.0)
    if mu_law:
        import librosa

        low = librosa.mu_expand(librosa.mu_compress(low, mu=255, quantize=True), mu=255, quantize=True)
    back = resample(np.asarray(low, dtype=np.float32), 8_000, SR)
    out = np.zeros_like(samples)
    out[: min(len(back), len(samples))] = back[: len(samples)]
    return out


def waveform(path: Path, channel: str) -> np.ndarray:
    """The recording at ``path`` through ``channel``: ``wide`` (as recorded), ``tel``, ``sim``,
    ``gsm``, ``amr``, or several joined by ``+`` and applied in order (``gsm+sim``: a GSM call that
    voicebank then passes through its own simulated channel)."""
    from voicebank.audio import near_speech, voiced_frames

    samples = decode(path)
    # what voicebank embeds of it: its speech with at most a second of anything else around it,
    # detected on the recording as recorded (voicebank detects a call's on the call: the same spans)
    samples = near_speech(samples, SR, voiced_frames(samples, SR))
    for step in channel.split("+"):
        samples = through(samples, step)
    return samples


def through(samples: np.ndarray, step: str) -> np.ndarray:
    if step == TELEPHONE:
        return telephone(samples)
    if step == SIMULATED:
        from voicebank.channel import telephone as simulated

        return simulated(samples, SR)
    if step in (GSM, AMR):
        return codec(samples, step)
    if step in (G712, LOWPASS):
        return simulated_line(samples, band=step == G712, mu_law=step == G712)
    if step != WIDEBAND:
        raise ValueError(f"unknown channel {step!r}")
    return samples


def cache_path(cache_dir: Path, corpus: str, channel: str, model_id: str) -> Path:
    """Named for what is in it: the corpus, the channel, the model, and how much non-speech around
    speech is embedded (``voicebank.audio.SPEECH_PAD_SECONDS``)."""
    from voicebank.audio import SPEECH_PAD_SECONDS

    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id)
    return cache_dir / f"{corpus}-{channel}-{model}-near{SPEECH_PAD_SECONDS:g}s.npz"


def embeddings(corpus: Corpus, channel: str, embedder, cache_dir: Path) -> tuple[np.ndarray, dict]:
    """(n, dimension) float32 embeddings of the corpus's recordings through ``channel``, in
    manifest order, from the cache where it has them; and what it cost."""
    from voicebank.embedding import embed_recordings

    path = cache_path(cache_dir, corpus.name, channel, embedder.model_id)
    keys = [str(p.relative_to(corpus.root)) for p in corpus.paths]
    done: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            done = dict(zip(z["keys"].tolist(), z["emb"]))
    todo = [i for i, k in enumerate(keys) if k not in done]
    start, audio_s = time.perf_counter(), 0.0
    for c in range(0, len(todo), CHUNK):
        chunk = todo[c:c + CHUNK]
        waves = [waveform(corpus.paths[i], channel) for i in chunk]
        audio_s += sum(len(w) for w in waves) / SR
        for i, e in zip(chunk, embed_recordings(embedder, waves)):
            done[keys[i]] = e
        _save(path, done)
        print(f"  embedded {corpus.name}/{channel}: {c + len(chunk)}/{len(todo)} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    cost = {"cache": str(path), "recordings": len(keys), "embedded_now": len(todo), "embed_wall_s": wall,
            "audio_s_embedded_now": audio_s, "x_real_time": audio_s / wall if todo and wall else None}
    return np.stack([done[k] for k in keys]).astype(np.float32), cost


def _save(path: Path, done: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, keys=np.array(list(done)), emb=np.stack(list(done.values())).astype(np.float32))
    os.replace(tmp, path)


def group(corpus: Corpus, row: int) -> str:
    """The part of the corpus a recording belongs to, for breaking errors down: the source corpus
    where the manifest says it, else children (12 and under) and older speakers where it gives ages."""
    r = corpus.rows[row]
    if r.get("corpus"):
        return r["corpus"]
    if str(r.get("age", "")).isdigit():
        return "children (<= 12)" if int(r["age"]) <= 12 else "13 and older"
    return "all"


def speech_seconds(corpus: Corpus, cache_dir: Path) -> np.ndarray:
    """Seconds of speech of every recording of ``corpus`` (manifest order), by the product's
    detector, as enrollment and every decision measure them (cached)."""
    from voicebank.audio import speech_seconds as measured

    path = cache_dir / f"{corpus.name}-speech-seconds.npz"
    keys = [str(p.relative_to(corpus.root)) for p in corpus.paths]
    if path.is_file():
        with np.load(path) as z:
            found = dict(zip(z["keys"].tolist(), z["seconds"]))
        if all(k in found for k in keys):
            return np.array([found[k] for k in keys])
    seconds = np.array([measured(decode(p), SR) for p in corpus.paths])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, keys=np.array(keys), seconds=seconds)
    return seconds

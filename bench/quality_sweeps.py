"""bench/quality.py's duration sweeps: verification EER against how much audio a probe, or an
enrollment, holds. The protocol is the one the README's figures were first measured with
(bench/quality.py before the held-out folds), so they can be measured again:

- every speaker with two or more recordings is enrolled from its first ``N_ENROLL`` (3)
  recordings; its other recordings are the probes; speakers with one recording are never
  enrolled (the unknown persons);
- **probe length** T: each probe at least T s long, cut to its first T s, against the full-length
  voiceprints; target = against its own, non-target = against every other voiceprint (no unknown
  persons, as before); the row "full" is the whole probes;
- **enrollment length** T: each speaker's 3 enrollment recordings cut to their first T/3 s (T s
  in all; a shorter recording is used whole and counted), full-length probes; target = against
  its own voiceprint, non-target = against every other voiceprint plus every unknown person
  against every voiceprint; the row "full" is the whole recordings.

Waveforms are the wideband decode of quality_data (as ``audio.load`` makes them); cuts are
embedded with ``embed_recordings`` and their speech measured with the product's detector
(``audio.speech_seconds``, silero-vad). Both are cached in the cache folder per corpus and model,
so a rerun embeds nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from voicebank.scoring import eer
from voicebank.vectors import voiceprint

import quality_data as data

PROBE_SECONDS = (1.0, 1.5, 2.0, 3.0, 5.0)
ENROLL_SECONDS = (3.0, 4.5, 6.0, 9.0, 15.0)
N_ENROLL = 3


def split(by_speaker: dict[str, list[int]]) -> tuple[list[list[int]], np.ndarray, np.ndarray, np.ndarray]:
    """(enrollment rows per speaker, probe rows, each probe's speaker index, unknown-person rows)."""
    multi = [idx for idx in by_speaker.values() if len(idx) > 1]
    enroll = [idx[:N_ENROLL] for idx in multi]
    probes = [(i, k) for k, idx in enumerate(multi) for i in idx[N_ENROLL:]]
    unknown = [idx[0] for idx in by_speaker.values() if len(idx) == 1]
    return enroll, np.array([i for i, _ in probes], dtype=int), np.array([k for _, k in probes], dtype=int), \
        np.array(unknown, dtype=int)


class Cuts:
    """Embeddings and speech seconds of the first ``n`` samples of recordings, cached on disk under
    ``<corpus>-cuts-<model>.npz`` (key: the recording's manifest path and ``n``)."""

    def __init__(self, corpus: data.Corpus, embedder, cache_dir: Path):
        self.corpus, self.embedder = corpus, embedder
        self.path = data.cache_path(cache_dir, corpus.name + "-cuts", data.WIDEBAND, embedder.model_id)
        self.done: dict[str, tuple[np.ndarray, float]] = {}
        self.lengths: dict[str, int] = {}  # manifest path -> samples of the whole recording
        if self.path.is_file():
            with np.load(self.path) as z:
                self.done = {k: (e, float(s)) for k, e, s in zip(z["keys"].tolist(), z["emb"], z["speech"])}
                self.lengths = dict(zip(z["length_keys"].tolist(), z["lengths"].tolist()))
        self.waves: dict[int, np.ndarray] = {}
        self.dirty = False
        self.embedded_now, self.audio_s, self.wall_s = 0, 0.0, 0.0

    def key(self, row: int, n: int) -> str:
        return f"{self.corpus.paths[row].relative_to(self.corpus.root)}#{n}"

    def wave(self, row: int) -> np.ndarray:
        if row not in self.waves:
            self.waves[row] = data.decode(self.corpus.paths[row])
        return self.waves[row]

    def length(self, row: int) -> int:
        key = str(self.corpus.paths[row].relative_to(self.corpus.root))
        if key not in self.lengths:
            self.lengths[key] = len(self.wave(row))
            self.dirty = True
        return self.lengths[key]

    def get(self, cuts: list[tuple[int, int]], label: str) -> tuple[np.ndarray, np.ndarray]:
        """((len(cuts), d) embeddings, (len(cuts),) speech seconds) of the (row, samples) cuts."""
        from voicebank.audio import speech_seconds
        from voicebank.embedding import embed_recordings

        todo = [c for c in dict.fromkeys(cuts) if self.key(*c) not in self.done]
        start = time.perf_counter()
        for j in range(0, len(todo), data.CHUNK):
            chunk = todo[j:j + data.CHUNK]
            waves = [self.wave(r)[:n] for r, n in chunk]
            for (r, n), w, e in zip(chunk, waves, embed_recordings(self.embedder, waves)):
                self.done[self.key(r, n)] = (e, speech_seconds(w, data.SR))
            self.audio_s += sum(len(w) for w in waves) / data.SR
            self._save()
            self.dirty = False
            print(f"  embedded {self.corpus.name} cuts ({label}): {j + len(chunk)}/{len(todo)} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        self.embedded_now += len(todo)
        self.wall_s += time.perf_counter() - start
        got = [self.done[self.key(*c)] for c in cuts]
        return np.stack([e for e, _ in got]).astype(np.float64), np.array([s for _, s in got])

    def flush(self) -> None:
        if self.dirty:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        keys = list(self.done)
        emb = np.stack([self.done[k][0] for k in keys]) if keys else np.zeros((0, self.embedder.dimension))
        np.savez(tmp, keys=np.array(keys, dtype=str), emb=emb.astype(np.float32),
                 speech=np.array([self.done[k][1] for k in keys]), length_keys=np.array(list(self.lengths)),
                 lengths=np.array(list(self.lengths.values()), dtype=np.int64))
        os.replace(tmp, self.path)


def verification(target: np.ndarray, nontarget: np.ndarray) -> dict:
    rate, threshold = eer(target, nontarget)
    return {"eer": rate, "threshold": threshold, "target": int(target.size), "nontarget": int(nontarget.size),
            "mean_target": float(target.mean()), "mean_nontarget": float(nontarget.mean())}


def trials(probe_scores: np.ndarray, owner: np.ndarray, unknown_scores: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Target: each probe against its own voiceprint. Non-target: against the others, plus every
    unknown person against every voiceprint."""
    own = np.zeros_like(probe_scores, dtype=bool)
    own[np.arange(len(owner)), owner] = True
    non = [probe_scores[~own]] + ([unknown_scores.ravel()] if unknown_scores is not None else [])
    return probe_scores[own], np.concatenate(non)


def sweep(corpus: data.Corpus, wide: np.ndarray, embedder, cache_dir: Path) -> dict:
    """Both sweeps on one corpus (``wide``: its full-recording embeddings, manifest order)."""
    enroll, probes, owner, unknown = split(corpus.by_speaker())
    if len(enroll) < 2 or not probes.size:
        return {"skipped": "fewer than two speakers with more than one recording"}
    cuts = Cuts(corpus, embedder, cache_dir)
    full = wide.astype(np.float64)
    prints = np.stack([voiceprint(full[idx]) for idx in enroll]).astype(np.float64)
    probe_rows = []
    for t in PROBE_SECONDS:
        n = int(round(t * data.SR))
        keep = np.array([cuts.length(i) >= n for i in probes], dtype=bool)
        if not keep.any():
            probe_rows.append({"seconds": t, "probes": 0})
            continue
        emb, speech = cuts.get([(int(i), n) for i in probes[keep]], f"probes {t:g} s")
        probe_rows.append({"seconds": t, "probes": int(keep.sum()), "speech_s_mean": float(speech.mean()),
                           "speech_s_min": float(speech.min()),
                           **verification(*trials(emb @ prints.T, owner[keep], None))})
    probe_rows.append({"seconds": "full", "probes": int(probes.size),
                       "audio_s_mean": float(np.mean([cuts.length(i) for i in probes]) / data.SR),
                       **verification(*trials(full[probes] @ prints.T, owner, None))})
    unknown_full = full[unknown] if unknown.size else None
    enroll_rows = []
    for total in ENROLL_SECONDS:
        n = int(round(total / N_ENROLL * data.SR))
        wanted = [(i, min(n, cuts.length(i))) for idx in enroll for i in idx]
        emb, speech = cuts.get(wanted, f"enrollment {total:g} s")
        k = [len(idx) for idx in enroll]
        ends = np.cumsum([0] + k)
        cut_prints = np.stack([voiceprint(emb[a:b]) for a, b in zip(ends[:-1], ends[1:])]).astype(np.float64)
        used = np.array([m for _, m in wanted]) / data.SR
        enroll_rows.append({
            "total_seconds": total, "speakers": len(enroll),
            "audio_s_per_speaker": float(np.mean([used[a:b].sum() for a, b in zip(ends[:-1], ends[1:])])),
            "speech_s_per_speaker": float(np.mean([speech[a:b].sum() for a, b in zip(ends[:-1], ends[1:])])),
            "speech_s_per_speaker_min": float(np.min([speech[a:b].sum() for a, b in zip(ends[:-1], ends[1:])])),
            "short_recordings": int(sum(m < n for _, m in wanted)),
            **verification(*trials(full[probes] @ cut_prints.T, owner,
                                   None if unknown_full is None else unknown_full @ cut_prints.T))})
    cuts.flush()
    used_full = [sum(cuts.length(i) for i in idx) / data.SR for idx in enroll]
    enroll_rows.append({"total_seconds": "full", "speakers": len(enroll),
                        "audio_s_per_speaker": float(np.mean(used_full)),
                        **verification(*trials(full[probes] @ prints.T, owner,
                                               None if unknown_full is None else unknown_full @ prints.T))})
    return {"speakers": len(enroll), "probes": int(probes.size), "unknown": int(unknown.size),
            "probe_length": probe_rows, "enrollment_length": enroll_rows,
            "cost": {"cache": str(cuts.path), "cuts": len(cuts.done), "embedded_now": cuts.embedded_now,
                     "audio_s_embedded_now": cuts.audio_s, "wall_s": cuts.wall_s}}

"""bench/quality.py's checks before enrollment: what the product's enrollment checks catch, which
recordings ``audio.load`` refuses, and whether it refuses sounds that are not speech.

The enrollment checks are computed as ``voicebank.enrollment_rules`` computes them, from the
embeddings: consistency = the lowest leave-one-out cosine of a speaker's recordings against the
consistency threshold; duplicate voice = the new voiceprint's cosine with the nearest enrolled
voiceprint against the duplicate threshold.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from voicebank.scoring import leave_one_out
from voicebank.vectors import voiceprint

SEED = 0
TRIPLE = 3


# ----------------------------------------------------------------------------- enrollment checks


def triples(by_speaker: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    """Consecutive, non-overlapping triples of each speaker's recordings (speakers with >= 3)."""
    return [(s, idx[j:j + TRIPLE]) for s, idx in by_speaker.items() for j in range(0, len(idx) - TRIPLE + 1, TRIPLE)]


def too_little_speech(by_speaker: dict[str, list[int]], seconds: np.ndarray) -> dict:
    """Genuine triples refused before any other check for holding less speech together than
    enrollment needs (``AudioLimits.min_enroll_speech_seconds``; ``seconds``: each recording's)."""
    from voicebank.audio import AudioLimits

    needed = AudioLimits().min_enroll_speech_seconds
    return {"speech_needed_s": needed,
            "speech_refused": sum(bool(seconds[idx].sum() < needed) for _, idx in triples(by_speaker))}


def refused(vectors: np.ndarray, consistency: float) -> tuple[bool, int]:
    """(is the enrollment refused by the consistency check, which recording the message names)."""
    scores = leave_one_out(vectors)
    worst = int(np.argmin(scores))
    return bool(scores[worst] < consistency), worst


def consistency_checks(by_speaker: dict[str, list[int]], wide: np.ndarray, phone: tuple[np.ndarray, np.ndarray] | None,
                       consistency: float) -> dict:
    """Genuine triples refused; triples with one recording replaced by another speaker's caught
    (and whether the message names the intruder); with ``phone`` (each recording's embedding
    through voicebank's simulated line, and a telephone call's through the same line), genuine
    triples with one recording a telephone call refused, and triples of calls refused: the product
    checks a triple holding a call in the telephone channel."""
    rng = np.random.default_rng(SEED)
    owner = np.empty(len(wide), dtype=object)
    for s, idx in by_speaker.items():
        owner[idx] = s
    genuine = intruder = named = mixed_refused = calls_refused = 0
    genuine_lowest, intruder_lowest = [], []  # each triple's lowest leave-one-out cosine (held_out_gates)
    groups = triples(by_speaker)
    for s, idx in groups:
        genuine += refused(wide[idx], consistency)[0]
        genuine_lowest.append(float(leave_one_out(wide[idx]).min()))
        strangers = np.flatnonzero(owner != s)
        for p in range(TRIPLE):
            swapped = list(idx)
            swapped[p] = int(rng.choice(strangers))
            caught, worst = refused(wide[swapped], consistency)
            intruder += caught
            intruder_lowest.append(float(leave_one_out(wide[swapped]).min()))
            named += caught and worst == p
            if phone is not None:
                line, call = phone
                mixed = line[idx].copy()
                mixed[p] = call[idx[p]]
                mixed_refused += refused(mixed, consistency)[0]
        if phone is not None:
            calls_refused += refused(phone[1][idx], consistency)[0]
    n = len(groups)
    out = {"enrollments": n, "genuine_refused": int(genuine), "intruder_variants": TRIPLE * n,
           "intruder_caught": int(intruder), "intruder_named": int(named),
           "scores": {"genuine_lowest": genuine_lowest, "intruder_lowest": intruder_lowest}}
    if phone is not None:
        out.update(phone_variants=TRIPLE * n, phone_refused=int(mixed_refused), calls_refused=int(calls_refused))
    return out


def duplicate_checks(by_speaker: dict[str, list[int]], wide: np.ndarray, folds_: list, duplicate: float) -> dict:
    """Per fold: each bank speaker enrolling again from recordings 4-6, with its 1-3 voiceprint and
    the other bank speakers enrolled (caught? named right?); each B speaker's first-3 voiceprint
    against the bank (flagged?); and each speaker with fewer than 6 recordings enrolling from
    its recordings (flagged?)."""
    same = same_named = new = new_n = single = single_n = 0
    again, newcomers = [], []  # the nearest voiceprint's cosine: a person enrolling again, a new person
    for f in folds_:
        bank = f.prints
        for k, s in enumerate(f.bank):
            idx = by_speaker[s]
            gallery = bank.copy()
            gallery[k] = voiceprint(wide[idx[:3]])
            scores = gallery @ voiceprint(wide[idx[3:6]]).astype(np.float64)
            same += scores.max() >= duplicate
            again.append(float(scores.max()))
            same_named += scores.max() >= duplicate and int(scores.argmax()) == k
        enrolled = set(f.bank)
        for s, idx in by_speaker.items():
            if s in enrolled:
                continue
            if len(idx) >= 6:  # the other half: a new person enrolling from three recordings
                new_n += 1
                new += float((bank @ voiceprint(wide[idx[:3]])).max()) >= duplicate
                newcomers.append(float((bank @ voiceprint(wide[idx[:3]])).max()))
            elif f.index == 0:  # a new person enrolling from all its (few) recordings; once per corpus
                single_n += 1
                single += float((bank @ voiceprint(wide[idx])).max()) >= duplicate
    return {"same_person": sum(len(f.bank) for f in folds_), "same_caught": int(same),
            "same_named": int(same_named), "new_people": new_n, "new_flagged": int(new),
            "few_recordings_people": single_n, "few_recordings_flagged": int(single),
            "duplicate_scores": {"again": again, "new": newcomers}}


# Each gate's rule, as CHECK_OFFSETS in voicebank/policy.py states it
REFUSE_AT_MOST = 0.01  # consistency: at most 1% of genuine enrollments refused
CATCH_AT_LEAST = 0.90  # duplicate voice: the same person enrolled again caught at least 90% of the time


def held_out_gates(checks: dict[str, dict]) -> list[dict]:
    """Each enrollment gate chosen by its rule on one corpus alone and measured on another (every
    ordered pair of corpora, and each on itself): does the rule that set the product's defaults
    carry to people it was not chosen on? ``checks``: {corpus: consistency_checks | duplicate_checks}."""
    out = []
    for chosen_on, a in checks.items():
        genuine = np.sort(a["scores"]["genuine_lowest"])
        consistency = float(genuine[int(REFUSE_AT_MOST * len(genuine))])  # refused: strictly below
        again = np.sort(a["duplicate_scores"]["again"])
        duplicate = float(again[int((1 - CATCH_AT_LEAST) * len(again))])  # caught: at or above
        for measured_on, b in checks.items():
            g, i = np.array(b["scores"]["genuine_lowest"]), np.array(b["scores"]["intruder_lowest"])
            same, new = np.array(b["duplicate_scores"]["again"]), np.array(b["duplicate_scores"]["new"])
            out.append({"chosen_on": chosen_on, "measured_on": measured_on, "consistency": consistency,
                        "genuine_refused": int((g < consistency).sum()), "genuine": len(g),
                        "intruder_caught": int((i < consistency).sum()), "intruders": len(i),
                        "duplicate": duplicate, "same_caught": int((same >= duplicate).sum()), "same": len(same),
                        "new_flagged": int((new >= duplicate).sum()), "new": len(new)})
    return out


# ----------------------------------------------------------------------------- recordings refused


def detector_digest() -> str:
    """What the refusals depend on: the source of voicebank.audio and voicebank.vad (the speech
    detector is being changed), so a cached count is redone when either changes."""
    import voicebank.audio as audio_mod

    h = hashlib.sha256()
    for name in ("audio.py", "vad.py"):
        path = Path(audio_mod.__file__).with_name(name)
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def refusals(corpus, channel: str, waveform, cache_dir: Path) -> dict:
    """Which recordings ``audio.load`` with the product's default ``AudioLimits()`` refuses, the
    wideband files as files and the telephone ones as (samples, 16000). Cached per corpus,
    channel and detector source."""
    from voicebank.audio import AudioLimits, load
    from voicebank.errors import AudioError

    digest = detector_digest()
    path = cache_dir / f"refusals-{corpus.name}-{channel}-{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    outcomes = []
    for p in corpus.paths:
        given = str(p) if channel == "wide" else (waveform(p, channel), 16_000)
        try:
            a = load(given, 16_000, AudioLimits())
            outcomes.append({"ok": True, "speech_s": round(a.speech_seconds, 3)})
        except AudioError as exc:
            outcomes.append({"ok": False, "error": type(exc).__name__, "message": str(exc)})
    result = {"detector": digest, "recordings": len(outcomes),
              "refused": sum(not o["ok"] for o in outcomes),
              "not_enough_speech": sum(o.get("error") == "NotEnoughSpeechError" for o in outcomes),
              "refused_recordings": {str(p.relative_to(corpus.root)): o["message"]
                                     for p, o in zip(corpus.paths, outcomes) if not o["ok"]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def synthetic_signals(seconds: float = 5.0, sr: int = 16_000) -> dict[str, np.ndarray]:
    """Sounds that are not speech, at a moderate level (peak about 0.3-0.5)."""
    rng = np.random.default_rng(SEED)
    t = np.arange(int(seconds * sr)) / sr
    white = rng.standard_normal(t.size)
    spectrum = np.fft.rfft(rng.standard_normal(t.size))
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.fft.rfftfreq(t.size, 1 / sr), 1.0)), t.size)
    clicks = np.zeros(t.size)
    clicks[:: sr // 10] = 1.0  # 10 clicks a second
    chord = sum(np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
                for f in (261.63, 329.63, 392.0, 523.25))  # C major, slowly swelling
    signals = {"white noise": white, "pink noise": pink, "440 Hz tone": np.sin(2 * np.pi * 440 * t),
               "220 Hz square wave": np.sign(np.sin(2 * np.pi * 220 * t)), "DC offset": np.ones(t.size),
               "click train": clicks, "chord (music)": chord}
    return {k: (0.3 * v / np.max(np.abs(v))).astype(np.float32) for k, v in signals.items()}


def not_speech() -> dict:
    """audio.load's answer (default AudioLimits) to each synthetic signal."""
    from voicebank.audio import AudioLimits, load
    from voicebank.errors import AudioError, NotEnoughSpeechError

    out = {}
    for name, samples in synthetic_signals().items():
        try:
            a = load((samples, 16_000), 16_000, AudioLimits())
            out[name] = {"refused": False, "speech_s": round(a.speech_seconds, 3)}
        except NotEnoughSpeechError as exc:
            out[name] = {"refused": True, "no_speech": True, "message": str(exc)}
        except AudioError as exc:
            out[name] = {"refused": True, "no_speech": False, "message": str(exc)}
    return out

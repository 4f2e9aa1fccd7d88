"""Which channel a recording came through, measured from its audio, and a simulated telephone channel.

- ``wideband``: speech reaches above 4 kHz (a microphone, a wideband codec, a 16 kHz file).
- ``telephone``: the speech stops near 4 kHz (8 kHz sampling: G.711, GSM, AMR-NB, most call
  recordings), whatever rate the file was later written at: an 8 kHz call saved as a 44.1 kHz WAV
  is still a telephone call. The file's header is not trusted for this; the spectrum is.

The measure compares the speech's energy from 4.6 to 7 kHz with its energy in the telephone band
(0.3 to 3.4 kHz), in dB, each taken over the frames the speech detector marked, less the noise
floor of the frames it did not (a hiss added after the codec fills every band, speech only its
own). Speech through a wideband channel keeps roughly -5 to -40 dB up there; a telephone channel
resampled to 16 kHz leaves -60 dB or less (G.711, GSM, AMR-NB). :data:`BOUNDARY_DB` lies between
the two; ``python bench/channel.py`` measures both sides on every corpus and codec it has.

:func:`telephone` is the channel voicebank simulates: 8 kHz sampling and G.711 mu-law (the PSTN's
codec), back to the model's rate. Each enrolled recording is also embedded through it, and so is
every call decided in the telephone channel, so that a caller and the voiceprints share one line
whatever line or codec the call took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .vectors import voiceprint

WIDEBAND, TELEPHONE = "wideband", "telephone"
CHANNELS = (WIDEBAND, TELEPHONE)
# which voiceprints a speaker has (SpeakerRow.channels): both; the telephone one only (enrolled
# over the phone); the wideband one only (enrolled before voicebank knew channels, or imported
# from embeddings made elsewhere, which come with none through the telephone channel)
BOTH = f"{WIDEBAND}+{TELEPHONE}"
NO_TELEPHONE = "imported from embeddings, or enrolled before voicebank measured channels"  # why a speaker lacks one
TELEPHONE_RATE = 8_000
BAND = (300.0, 3400.0)  # G.712: what a telephone line passes (where a channel's speech is measured)
HIGH = (4600.0, 7000.0)  # only a wideband channel carries speech here
BOUNDARY_DB = -45.0  # speech above 4.6 kHz against the telephone band; below: telephone
_FFT = 512  # 32 ms at 16 kHz: the speech detector's frame
_MIN_QUIET = 10  # frames without speech needed to measure the noise floor from them
_BLOCK = 256  # frames whose spectra are held at once (8 s at 16 kHz, about 1 MB)
_MU = 255.0


@dataclass(frozen=True)
class Reading:
    """What :func:`measure` found: the ``channel``; ``high_db``, the speech's energy above 4.6 kHz
    against its telephone-band energy in dB (None when the rate cannot carry it or there was no
    speech to measure); and ``bandwidth_hz``, the highest frequency at which the speech's spectrum
    is within 40 dB of its telephone-band level."""

    channel: str
    high_db: float | None
    bandwidth_hz: float

    def to_dict(self) -> dict:
        return {"channel": self.channel, "high_band_db": None if self.high_db is None else round(self.high_db, 1),
                "bandwidth_hz": round(self.bandwidth_hz)}


def measure(samples: np.ndarray, sample_rate: int, speech: np.ndarray | None = None) -> Reading:
    """The channel of mono float32 ``samples`` at ``sample_rate`` Hz. ``speech``: one bool per
    32 ms frame (``audio.voiced_frames``); None or all-False measures every frame. A rate that
    cannot carry 4.6 kHz is telephone by definition."""
    if sample_rate < 2 * HIGH[1]:
        return Reading(TELEPHONE, None, sample_rate / 2)
    excess, freqs = speech_spectrum(samples, sample_rate, speech)
    band = excess[(freqs >= BAND[0]) & (freqs <= BAND[1])].mean()
    if not band > 0:  # no speech energy above the floor: nothing to measure
        return Reading(WIDEBAND, None, 0.0)
    high = excess[(freqs >= HIGH[0]) & (freqs <= HIGH[1])].mean()
    high_db = float(10 * np.log10(max(high, band * 1e-30) / band))
    within = np.flatnonzero((excess >= band * 1e-4) & (freqs >= BAND[0]))
    return Reading(TELEPHONE if high_db < BOUNDARY_DB else WIDEBAND, high_db,
                   float(freqs[within[-1]]) if within.size else 0.0)


def speech_spectrum(samples: np.ndarray, sample_rate: int, speech: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(power per frequency bin of the speech frames above the noise floor, the bins' frequencies
    in Hz). Frames are 32 ms, Hann-windowed; the floor is measured on the frames that are not
    speech, when there are at least :data:`_MIN_QUIET` of them. Spectra are taken
    :data:`_BLOCK` frames at a time, so memory does not grow with the recording."""
    size = max(16, round(_FFT * sample_rate / 16_000))
    samples = np.asarray(samples, dtype=np.float32)
    count = max(1, len(samples) // size)
    if len(samples) < size:
        samples = np.pad(samples, (0, size - len(samples)))
    window = np.hanning(size).astype(np.float32)
    voiced = np.zeros(count, dtype=bool)
    if speech is not None:
        given = np.asarray(speech, dtype=bool)[:count]
        voiced[: len(given)] = given
    if not voiced.any():
        voiced[:] = True
    quiet = ~voiced

    def blocks():  # (first frame, power spectra of the block's frames)
        for a in range(0, count, _BLOCK):
            b = min(count, a + _BLOCK)
            yield a, np.abs(np.fft.rfft(samples[a * size : b * size].reshape(b - a, size) * window, axis=1)) ** 2

    bins = size // 2 + 1
    speech_power, level = np.zeros(bins), np.zeros(count)
    for a, power in blocks():
        speech_power += power[voiced[a : a + len(power)]].sum(axis=0)
        level[a : a + len(power)] = power.sum(axis=1)
    # the floor: the mean spectrum of the quiet frames (a bin's power is exponentially distributed,
    # so a per-bin median or percentile would sit well below the noise's mean), leaving out the
    # loudest fifth of them (a breath, a click). Without enough pauses there is no telling noise from
    # the quietest speech: nothing is taken off.
    floor = np.zeros(bins)
    if quiet.sum() >= _MIN_QUIET:
        kept = quiet & (level <= np.quantile(level[quiet], 0.8))
        for a, power in blocks():
            floor += power[kept[a : a + len(power)]].sum(axis=0)
        floor /= kept.sum()
    return np.maximum(speech_power / voiced.sum() - floor, 0.0), np.fft.rfftfreq(size, 1.0 / sample_rate)


def telephone(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``samples`` (float32 mono at ``sample_rate``) as a telephone line delivers them: sampled at
    8 kHz (band-limited to 4 kHz), coded and decoded with G.711 mu-law, resampled back to
    ``sample_rate``. Same length as the input.

    No G.712 band filter (300-3400 Hz): with one, identification through real codecs fell by 3
    points (GSM 06.10: 33.6% against 36.6% at a 1% promise; AMR-NB 33.2% against 35.2%;
    speechocean762-dev, resemblyzer), and the 8 kHz band limit alone did as well as with the codec
    (``python bench/channel.py``; docs/calibration.md, Channels)."""
    from .decode import resample

    samples = np.asarray(samples, dtype=np.float32)
    low = np.clip(resample(samples, sample_rate, TELEPHONE_RATE), -1.0, 1.0)
    coded = np.round(np.sign(low) * np.log1p(_MU * np.abs(low)) / np.log1p(_MU) * 127.0) / 127.0  # 8 bits
    decoded = (np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(_MU)) / _MU).astype(np.float32)
    back = resample(decoded, TELEPHONE_RATE, sample_rate)
    out = np.zeros_like(samples)
    out[: min(len(back), len(samples))] = back[: len(samples)]
    return out


def speaker_prints(embeddings: list[np.ndarray], channels: list[str | None], telephones: list[np.ndarray | None]
                   ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """A speaker's (wideband voiceprint, telephone voiceprint or None, which it has: ``BOTH``,
    ``TELEPHONE`` or ``WIDEBAND``) from its recordings: each one's embedding as it came, the channel
    it came through (None: recorded before channels were measured, taken as wideband) and its
    embedding through the telephone channel (None before channels). The wideband voiceprint is
    made of the wideband recordings only; a speaker with none has its telephone voiceprint in
    that place too (the index holds it)."""
    wide = [e for e, c in zip(embeddings, channels) if c != TELEPHONE]
    through = [t for t in telephones if t is not None]
    telephone = voiceprint(np.stack(through)) if through else None
    if not wide and telephone is not None:
        return telephone, telephone, TELEPHONE
    wide = wide or embeddings
    return voiceprint(np.stack(wide)), telephone, BOTH if telephone is not None else WIDEBAND


def decision_channel(heard: str, lacking: Callable[[str], int]) -> tuple[str, str | None]:
    """The channel to decide a probe that came through ``heard`` in, and a note for its answer
    when that is not simply the channel heard. ``lacking(channel)``: how many of the voiceprints it
    is compared with have none in that channel.

    A probe and the voiceprints it is scored against must share a channel, and the operating point
    must be the one measured in it: a wideband probe compared with speakers enrolled over the
    telephone only is passed through the telephone channel (it loses detail, the voiceprints cannot
    gain it); a telephone probe is compared in the telephone channel, unless voiceprints lack it
    (enrolled before voicebank measured channels), when it is scored against the wideband ones,
    with a note, as before."""
    if heard == WIDEBAND:
        without = lacking(WIDEBAND)
        if not without:
            return WIDEBAND, None
        if not lacking(TELEPHONE):
            return TELEPHONE, (f"{speakers_have(without)} enrolled over the telephone only: decided in the telephone "
                               "channel, the recording passed through it")
        return WIDEBAND, (f"{speakers_have(without)} enrolled over the telephone only and others have no telephone "
                          "voiceprint: decided in wideband, where those enrolled over the telephone cannot "
                          "be compared; enroll the others again")
    without = lacking(TELEPHONE)
    if not without:
        return TELEPHONE, None
    return WIDEBAND, (f"a telephone recording, but {speakers_have(without)} no telephone voiceprint ({NO_TELEPHONE}): "
                      "decided against the wideband voiceprints, where telephone "
                      "callers score low; enroll them again (or `voicebank add` new recordings) to add it")


def speakers_have(count: int) -> str:
    """"1 speaker has", "12 speakers have", "1,000+ speakers have" (counts stop at 1,000)."""
    return "1 speaker has" if count == 1 else f"{count:,}{'+' if count >= 1000 else ''} speakers have"

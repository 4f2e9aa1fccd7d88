"""The listen command: decide while a recording plays, as a live call would be decided."""

from __future__ import annotations

import sys
import time
from typing import Iterator

import click

from .base import JSON_OPTION, Context, emit, handle_errors, main

FILE_RATE = 16_000  # a file is decoded at this rate (any rate it was written at)
MAX_FILE_SECONDS = 4 * 3600.0  # as scan: the longest recording fed from a file


@main.command(name="listen")
@click.argument("recording", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--name", metavar="NAME", help="The person claimed: is it them? (Default: who is speaking?)")
@click.option("--rate", type=click.IntRange(8000, 48000), metavar="HZ",
              help="With '-': the sample rate of the raw 16-bit little-endian mono PCM on stdin (default 16000).")
@click.option("--realtime", is_flag=True, help="Feed the audio at the pace it was spoken, not as fast as it goes.")
@click.option("--chunk", type=click.FloatRange(0.01, 1.0), default=0.1, show_default=True, metavar="S",
              help="Seconds of audio per chunk fed.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def listen(obj: Context, recording: str, name: str | None, rate: int | None, realtime: bool, chunk: float,
           as_json: bool) -> None:
    """Decide while RECORDING plays (a file, or '-' for raw PCM on stdin), as a live call would be.

    A decision comes after 2 s of speech, then one per second of speech more, each on all the
    speech since the start (or since a change of speaker); a change of speaker is reported when
    the latest 3 s stop sounding like what came before. The last line is the final decision,
    audited as one verify or identify. Exits 1 when the final decision rejects (or finds no one,
    or heard too little speech).

    \b
    Example:
      voicebank listen --name alice call.wav
      voicebank listen call.flac --json
      arecord -f S16_LE -r 8000 -c 1 -t raw | voicebank listen --name alice --rate 8000 --realtime -
    """
    from ..errors import InvalidInputError

    if rate is not None and recording != "-":
        raise InvalidInputError("--rate is for raw PCM on stdin ('-'); a file's own rate is read from it.")
    rate = rate or FILE_RATE
    with obj.open() as bank:
        session = bank.listen(name, rate)
        start = time.monotonic()
        fed = 0
        for piece in _chunks(recording, rate, chunk):
            if realtime:
                time.sleep(max(0.0, start + fed / rate - time.monotonic()))
            fed += len(piece) // (2 if isinstance(piece, bytes) else 1)
            for update in session.feed(piece):
                emit(update.to_dict(), as_json, line(update))
        final = session.close()
    emit(final.to_dict(), as_json, line(final))
    result = final.result
    if result is None or not getattr(result, "accepted", getattr(result, "match", None)):
        sys.exit(1)


def _chunks(recording: str, rate: int, seconds: float) -> Iterator[object]:
    size = max(1, round(seconds * rate))
    if recording == "-":
        stream = click.get_binary_stream("stdin")
        while True:
            data = stream.read(2 * size)
            if not data:
                return
            yield data
    from pathlib import Path

    from ..decode import decode

    samples, _ = decode(Path(recording), recording, MAX_FILE_SECONDS, rate)
    for at in range(0, len(samples), size):
        yield samples[at: at + size]


def line(update) -> str:  # update: voicebank.live.Update
    """One line for people: when (seconds of audio), what, on how much speech."""
    from ..results import Verification

    when = f"{update.at:7.2f} s" if update.event != "final" else "  final  "
    result = update.result
    if update.event == "listening":
        return f"{when}  listening: {update.heard:.1f} s of speech, not enough to decide yet"
    if update.event == "change":
        return (f"{when}  change of speaker: the last 3 s score {update.change_score:.4f} against the earlier "
                f"speech (below {update.change_threshold:.4f})")
    if result is None:
        return f"{when}  not enough speech to decide ({update.heard:.1f} s heard)"
    if isinstance(result, Verification):
        verdict = f"{result.name}: {'accepted' if result.accepted else 'rejected'} (score {result.score:.4f}"
    else:
        best = result.candidates[0] if result.candidates else None
        who = result.match.name if result.match else "unknown" + (f", nearest {best.name}" if best else "")
        verdict = f"{who} (score {result.decision:.4f}" if result.decision is not None else f"{who} (no score"
    return f"{when}  {verdict}, threshold {result.threshold:.4f}, on {update.speech:.1f} s of speech)"

"""Commands about speakers: init, enroll, add, import, identify, verify, list, show, remove."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .base import JSON_OPTION, Context, emit, handle_errors, main, parse_meta, progress_bar, safe


def QUALITY_OPTIONS(command):  # noqa: N802 (a decorator, named like the other option constants)
    command = click.option("--strict", is_flag=True,
                           help="Refuse (rather than warn) when the voice already matches another speaker.")(command)
    return click.option("--allow-inconsistent", is_flag=True,
                        help="Store a recording even if it does not sound like the speaker's others.")(command)


@main.command()
@click.option("--threshold", type=float, help="Starting threshold of both decisions (default: the model's); "
              "`voicebank calibrate` measures better ones.")
@click.option("--identify-rule", type=click.Choice(["margin", "best"]), default="margin", show_default=True,
              help="What identification decides on: 2 x best - second best score (margin), or the best score.")
@click.option("--index", "index_kind", type=click.Choice(["flat", "hnsw", "ivf", "pgvector"]), default="flat", show_default=True,
              help="Index: flat (exact), hnsw or ivf (FAISS, approximate, for very large banks), or pgvector "
                   "(inside PostgreSQL; PostgreSQL banks only). See docs/deployment.md.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def init(obj: Context, threshold: float | None, identify_rule: str, index_kind: str, as_json: bool) -> None:
    """Create a new, empty bank (database schema + the model's identity and threshold).

    \b
    Example:
      voicebank --db voicebank.db init
      voicebank --db postgresql://user@host/voices --model ./wavlm-base-plus-sv init
    """
    from .admin import calibration_text

    with obj.open(create=True, exist_ok=False, threshold=threshold, identify_rule=identify_rule, index=index_kind) as bank:
        status, telephone = bank.thresholds.status(), bank.thresholds.status(channel="telephone")
        info = {"db": obj.db or "voicebank.db", "model": bank.model_source, "model_id": bank.model_id,
                "dimension": bank.dimension, "threshold": bank.thresholds.verify,
                "identify_threshold": bank.thresholds.identify, "index": bank.index.kind, "calibration": status, "channels": {"telephone": telephone}}
    emit(info, as_json, f"Created a voicebank with {info['model']} ({info['dimension']}-dim).\n"
         + calibration_text(status) + "\n" + calibration_text(telephone, "telephone "))


@main.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata to store with the speaker; the value as text (repeatable).")
@QUALITY_OPTIONS
@JSON_OPTION
@click.pass_obj
@handle_errors
def enroll(obj: Context, name: str, files: tuple[str, ...], meta: tuple[str, ...], allow_inconsistent: bool,
           strict: bool, as_json: bool) -> None:
    """Enroll a new speaker NAME from one or more recordings (wav, flac, ogg, mp3, ...).

    All recordings are checked before anything is stored; if one is unusable, nothing is.

    \b
    Example:
      voicebank enroll alice a1.wav a2.flac a3.mp3 --meta employee_id=42
    """
    metadata = parse_meta(meta)
    with obj.open() as bank:
        bar, progress = progress_bar(len(files))
        with bar:
            speaker = bank.enroll(name, list(files), metadata=metadata, progress=progress,
                                  allow_inconsistent=allow_inconsistent, strict=strict)
    emit(speaker.to_dict(), as_json, "\n".join(
        [f"Enrolled {speaker.name} from {len(speaker.recordings)} recordings ({speaker.speech_seconds:.1f} s of speech)."]
        + [f"Warning: {w}" for w in speaker.warnings]))


@main.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@QUALITY_OPTIONS
@JSON_OPTION
@click.pass_obj
@handle_errors
def add(obj: Context, name: str, files: tuple[str, ...], allow_inconsistent: bool, strict: bool, as_json: bool) -> None:
    """Add recordings to an enrolled speaker; the voiceprint is recomputed from all of them.

    \b
    Example:
      voicebank add alice a4.wav a5.wav
    """
    with obj.open() as bank:
        bar, progress = progress_bar(len(files))
        with bar:
            speaker = bank.add_recordings(name, list(files), progress=progress,
                                          allow_inconsistent=allow_inconsistent, strict=strict)
    emit(speaker.to_dict(), as_json, "\n".join(
        [f"{speaker.name} now has {len(speaker.recordings)} recordings."] + [f"Warning: {w}" for w in speaker.warnings]))


@main.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="With a .npz file: speakers stored per transaction (a killed import leaves whole batches).")
@QUALITY_OPTIONS
@JSON_OPTION
@click.pass_obj
@handle_errors
def import_(obj: Context, source: str, batch_size: int, allow_inconsistent: bool, strict: bool, as_json: bool) -> None:
    """Enroll many speakers at once from SOURCE: a folder with one sub-folder of recordings per
    speaker (named after them), a CSV file with the columns name,file[,metadata...], or a .npz
    file of embeddings made elsewhere by the bank's model (for thousands of people).

    Faster than one `enroll` command per speaker: the model is loaded once, and batches
    recordings across speakers. Each speaker is stored as soon as it is done; one whose recordings fail a check is reported and
    nothing is stored for it. Speakers already enrolled are skipped, so the same import can be
    run again after fixing what failed, or after it was killed. Exit code 2 if any speaker failed.

    A .npz file (numpy.savez) holds model (the bank's model_id, as `init --json` prints it),
    dimension, names (n,), speaker (m,) (each embedding's index in names, non-decreasing),
    embeddings (m, dimension) and optionally metadata (n,) (JSON objects). It is checked in full
    before anything is stored, then stored --batch-size speakers per transaction. See
    docs/deployment.md, "Importing people from embeddings".

    \b
    Example:
      voicebank import people/          # people/alice/a1.wav, people/bob/b1.flac, ...
      voicebank import staff.csv --json # name,file,employee_id
      voicebank import staff.npz        # embeddings made elsewhere
    """
    from .. import manifest
    from ..errors import VoiceBankError

    if source.lower().endswith(".npz") and not Path(source).is_dir():
        if allow_inconsistent or strict:
            raise VoiceBankError("--strict and --allow-inconsistent are checks of recordings; a file of embeddings "
                                 "is stored as given.")
        return _import_embeddings(obj, source, batch_size, as_json)
    speakers = manifest.read(source)
    with obj.open() as bank:
        bar, progress = progress_bar(sum(len(s.recordings) for s in speakers))
        with bar:
            outcomes = bank.enroll_many(speakers, progress, allow_inconsistent=allow_inconsistent, strict=strict)
    counts, text = _import_report(outcomes)
    emit({**counts, "speakers": [o.to_dict() for o in outcomes]}, as_json, text)
    if counts["failed"]:
        raise VoiceBankError(f"{counts['failed']} of {len(outcomes)} speakers failed and were not stored; fix their "
                             "recordings and run the same import again (enrolled speakers are skipped).")


def _import_embeddings(obj: Context, source: str, batch_size: int, as_json: bool) -> None:
    from ..errors import VoiceBankError

    with obj.open() as bank:
        bank.refuse_changes("import speakers")
        bar, progress = progress_bar(0, "Checking", absolute=True)
        with bar:
            embeddings = bank.bulk.read(source, progress)
        bar, progress = progress_bar(embeddings.count, "Importing", absolute=True)
        with bar:
            report = bank.bulk.import_embeddings(embeddings, batch_size, progress)
    lines = [f"Enrolled {report.enrolled} speaker{'' if report.enrolled == 1 else 's'} from {safe(embeddings.label)}, "
             f"skipped {report.skipped} already enrolled, {len(report.failed)} failed ({report.seconds:.1f} s)."]
    lines += [f"  {safe(name)} failed: {safe(why)}" for name, why in report.failed]
    emit(report.to_dict(), as_json, "\n".join(lines))
    if report.failed:
        raise VoiceBankError(f"{len(report.failed)} of {report.speakers} speakers failed and were not stored; rename "
                             "them in the file and run the same import again (enrolled speakers are skipped).")


def _import_report(outcomes: list) -> tuple[dict[str, int], str]:
    """How many speakers were enrolled, skipped and failed, and the lines that say so."""
    from ..results import ENROLLED, FAILED, SKIPPED

    counts = {status: sum(o.status == status for o in outcomes) for status in (ENROLLED, SKIPPED, FAILED)}
    lines = [f"Enrolled {counts[ENROLLED]} speaker{'' if counts[ENROLLED] == 1 else 's'}, skipped "
             f"{counts[SKIPPED]} already enrolled, {counts[FAILED]} failed."]
    for o in outcomes:
        if o.status == FAILED:
            lines.append(f"  {safe(o.name)} failed: {safe(o.message or '')}")
        lines.extend(f"  {safe(o.name)}, warning: {safe(w)}" for w in (o.speaker.warnings if o.speaker else ()))
    return counts, "\n".join(lines)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top-k", "-k", default=5, show_default=True, help="How many candidates to list.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def identify(obj: Context, files: tuple[str, ...], top_k: int, as_json: bool) -> None:
    """Who is speaking in FILE? Prints the best match, or "unknown" below the threshold.

    Exit code 0 when a speaker matched, 1 when the voice is unknown. Several files are
    identified in one batch, a line each (with --json, one JSON object per line, with its
    "file"); exit code 0 if every one matched, 1 if any was unknown, 2 if any was unusable.

    \b
    Example:
      voicebank identify unknown.wav --top-k 3
      voicebank identify unknown.wav --json
      voicebank identify calls/*.wav --json > who.jsonl
    """
    if len(files) == 1:
        with obj.open() as bank:
            result = bank.identify(files[0], top_k=top_k)
        lines = [f"match: {result.match.name} ({_decision(result)})" if result.match
                 else f"match: unknown ({_decision(result)})"]
        lines += _channel_note(result.channel)
        lines += [f"  {i}. {c.name:<30} {c.score:.4f}" for i, c in enumerate(result.candidates, 1)]
        emit(result.to_dict(), as_json, "\n".join(lines))
        _warn_if_outgrown([result])
        sys.exit(0 if result.match else 1)
    _identify_many(obj, files, top_k, as_json)


def _decided(result) -> str:
    """What was compared with the threshold, for people."""
    return "best score" if result.rule == "best" else "2 x best - second best score"


def _decision(result) -> str:
    """The number the decision was taken on, named, against the threshold it met or missed."""
    if result.decision is None:
        return f"no candidate, threshold {result.threshold:.4f}"
    side = ">=" if result.match else "<"
    return f"{_decided(result)} {result.decision:.4f} {side} threshold {result.threshold:.4f}{_at(result)}"


def _at(result) -> str:
    """The speech the threshold was read at (a longer probe gets a higher one: docs/calibration.md)."""
    return "" if result.speech_seconds is None else f" for {result.speech_seconds:.1f} s of speech"


def _channel_note(channel: dict | None) -> list[str]:
    """A line when the recording was decided in another channel than the one it came through, or
    came through a telephone line: people should know which voiceprints it was compared with."""
    if not channel:
        return []
    heard = channel.get("heard", {}).get("channel")
    if channel.get("note"):
        return [f"  channel: {safe(channel['note'])}"]
    if heard == "telephone":
        return ["  channel: a telephone recording, decided against the telephone voiceprints"]
    return []


def _warn_if_outgrown(results: list) -> None:
    """One line on stderr when the bank has grown past its identification calibration."""
    status = next((r.calibration for r in results if getattr(r, "calibration", None)), None)
    if status and status.get("outgrown"):
        click.echo(f"warning: the identification threshold was calibrated with {status['gallery_at_calibration']} "
                   f"speakers for {status['target']:.2%} unknown-person false alarms; with {status['gallery']} now "
                   f"about {status['expected_rate']:.2%}. Run `voicebank calibrate`.", err=True)


def _identify_many(obj: Context, files: tuple[str, ...], top_k: int, as_json: bool) -> None:
    from ..errors import VoiceBankError
    from ..results import Identification

    with obj.open() as bank:
        bar, progress = progress_bar(len(files))
        with bar:
            results = bank.identify_many(files, top_k=top_k, progress=progress)
    for file, result in zip(files, results):
        if isinstance(result, Identification):
            shown = safe(file)
            text = f"{shown}: {result.match.name if result.match else 'unknown'} ({_decision(result)})"
            emit({"file": file, **result.to_dict()}, as_json, text)
        else:
            message = str(result).removeprefix(f"{file}: ")  # audio errors begin with the file's name
            emit({"file": file, "error": str(result)}, as_json, f"{safe(file)}: error: {safe(message)}")
    _warn_if_outgrown(results)
    failed = sum(not isinstance(r, Identification) for r in results)
    if failed:
        raise VoiceBankError(f"{failed} of {len(files)} recordings could not be used (see above); the others "
                             "were identified.")
    sys.exit(0 if all(r.match for r in results) else 1)


@main.command()
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@JSON_OPTION
@click.pass_obj
@handle_errors
def verify(obj: Context, name: str, file: str, as_json: bool) -> None:
    """Is the speaker in FILE the enrolled NAME? Exit code 0 accepted, 1 rejected.

    \b
    Example:
      voicebank verify alice attempt.wav && echo "welcome, alice"
    """
    with obj.open() as bank:
        result = bank.verify(name, file)
    verdict = "accepted" if result.accepted else "rejected"
    side = ">=" if result.accepted else "<"
    emit(result.to_dict(), as_json, "\n".join(
        [f"{verdict}: {name} (score {result.score:.4f} {side} threshold {result.threshold:.4f}{_at(result)})"]
        + _channel_note(result.channel)))
    sys.exit(0 if result.accepted else 1)


@main.command(name="list")
@JSON_OPTION
@click.pass_obj
@handle_errors
def list_(obj: Context, as_json: bool) -> None:
    """List the enrolled speakers.

    \b
    Example:
      voicebank list --json
    """
    with obj.open() as bank:
        speakers = bank.speakers()
    rows = [f"{s.name:<30} {len(s.recordings):>3} recordings {s.speech_seconds:8.1f} s speech" for s in speakers]
    emit([s.to_dict() for s in speakers], as_json, "\n".join(rows) if rows else "No speakers enrolled.")


@main.command()
@click.argument("name")
@JSON_OPTION
@click.pass_obj
@handle_errors
def show(obj: Context, name: str, as_json: bool) -> None:
    """Show one speaker: metadata and recordings.

    \b
    Example:
      voicebank show alice
    """
    with obj.open() as bank:
        speaker = bank.speaker(name)
    lines = [f"name: {speaker.name}", f"enrolled: {speaker.created_at:%Y-%m-%d %H:%M:%S} UTC",
             f"metadata: {json.dumps(speaker.metadata, ensure_ascii=False)}", "recordings:"]
    lines += [f"  {safe(r.label)}  {r.duration_s:.1f} s ({r.speech_s:.1f} s speech)  sha256 {r.sha256[:12]}"
              if r.sha256 is not None else f"  {safe(r.label)}  imported embedding (no recording)"
              for r in speaker.recordings]
    emit(speaker.to_dict(), as_json, "\n".join(lines))


@main.command()
@click.argument("name")
@click.pass_obj
@handle_errors
def remove(obj: Context, name: str) -> None:
    """Remove a speaker and every embedding of their voice.

    \b
    Example:
      voicebank remove alice
    """
    with obj.open() as bank:
        bank.remove(name)
    click.echo(f"Removed {name}.")

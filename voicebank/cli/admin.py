"""Commands that look after the bank: threshold, reindex, check, db."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from ..channel import NO_TELEPHONE, speakers_have
from .base import JSON_OPTION, Context, emit, handle_errors, lengths_text, main


@main.command()
@click.option("--index", "index_kind", type=click.Choice(["flat", "hnsw", "ivf", "pgvector"]),
              help="Switch the bank to this index kind (every process follows).")
@click.pass_obj
@handle_errors
def reindex(obj: Context, index_kind: str | None) -> None:
    """Rebuild the FAISS index from the database (the source of truth), optionally as another kind.

    \b
    Example:
      voicebank reindex
      voicebank reindex --index hnsw
    """
    with obj.open() as bank:
        count = bank.index.rebuild(index_kind)
        kind = bank.index.kind
        lacking = {channel: bank.index.lacking(channel) for channel in ("telephone", "wideband")}
    click.echo("\n".join([f"Indexed {count} voiceprints ({kind})."] + channels_text(lacking)))


@main.command()
@JSON_OPTION
@click.pass_obj
@handle_errors
def check(obj: Context, as_json: bool) -> None:
    """Check that the FAISS index agrees with the database. Exit code 1 if it does not.

    \b
    Example:
      voicebank check || voicebank reindex
    """
    with obj.open() as bank:
        report = bank.index.check()
    text = (f"index file: {report.index_file}\nspeakers: {report.speakers_in_sql} in SQL, "
            f"{report.speakers_in_index} in the index\n" + ("OK: the index agrees with SQL." if report.ok else
            f"DISAGREEMENT: missing {report.missing_from_index}, not in SQL {report.not_in_sql}, "
            f"wrong vectors {report.wrong_vectors}. Run `voicebank reindex`."))
    phone = report.telephone_index
    if phone and (phone["missing_from_index"] or phone["not_in_sql"] or phone["wrong_vectors"]):
        text += (f"\ntelephone index: DISAGREEMENT: missing {phone['missing_from_index']}, not in SQL "
                 f"{phone['not_in_sql']}, wrong vectors {phone['wrong_vectors']}. Run `voicebank reindex`.")
    elif phone:
        text += f"\ntelephone index: {phone['speakers_in_index']} voiceprints, OK."
    text += "".join("\n" + line for line in channels_text(report.lacking))
    text += "".join(f"\nrecording enrolled for {len(names)} speakers: {label} ({', '.join(names)}): a recording belongs "
                    "to one person; remove the speaker it is not (`voicebank remove NAME`)."
                    for label, names in report.shared_recordings or [])
    emit(report.to_dict(), as_json, "\n".join([text, calibration_text(report.calibration),
                                               calibration_text(report.telephone_calibration, "telephone ")]))
    sys.exit(0 if report.ok else 1)


def channels_text(lacking: dict[str, int]) -> list[str]:
    """What the bank's speakers lack in a channel, and what adds it (for `check` and `reindex`)."""
    lines = []
    if lacking.get("telephone"):
        lines.append(f"channels: {speakers_have(lacking['telephone'])} no telephone voiceprint ({NO_TELEPHONE}): "
                     "telephone calls are decided against the wideband voiceprints, where "
                     "callers score low. Enroll them again, or `voicebank add NAME FILE...`, to add it (`reindex` "
                     "cannot: the bank keeps no audio).")
    if lacking.get("wideband"):  # as channel.decision_channel decides
        where = ("in wideband, where they cannot be matched until the others have telephone voiceprints"
                 if lacking.get("telephone") else "in the telephone channel")
        lines.append(f"channels: {speakers_have(lacking['wideband'])} only telephone recordings: wideband recordings "
                     f"are decided {where}.")
    return lines


@main.command()
@click.argument("value", required=False, type=float)
@click.option("--for", "purpose", type=click.Choice(["both", "verify", "identify", "scan"]), default="both",
              show_default=True, help="Which threshold VALUE sets (both: verify and identify; scan: scan's windows).")
@click.option("--channel", type=click.Choice(["wideband", "telephone", "both"]), default="wideband", show_default=True,
              help="Which channel's threshold VALUE sets: recordings that came through a wideband channel, or "
                   "through a telephone line.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def threshold(obj: Context, value: float | None, purpose: str, channel: str, as_json: bool) -> None:
    """Show the thresholds and what they promise, or set one (or more) to VALUE by hand.

    verify (1:1) is the threshold `verify` uses; identify (1:N) the one `identify` uses, and
    `scan` too unless its windows have one of their own (scan). Each channel has its own: a
    recording is decided with those of the channel it came through (wideband, or a telephone
    line), measured from its audio. A value set by hand
    promises no rate: `voicebank calibrate` measures one.

    \b
    Example:
      voicebank threshold
      voicebank threshold 0.80 --for verify
      voicebank threshold 0.70 --for verify --channel telephone
    """
    with obj.open() as bank:
        if value is not None:
            bank.thresholds.set(value, None if purpose == "both" else purpose, None if channel == "both" else channel)
        status = bank.thresholds.status()
        telephone = bank.thresholds.status(channel="telephone")
    emit({"threshold": status["verify"]["threshold"], "identify_threshold": status["identify"]["threshold"],
          "calibration": status, "channels": {"telephone": telephone}}, as_json,
         calibration_text(status) + "\n" + calibration_text(telephone, "telephone "))


@main.command()
@click.option("--consistency", type=float, help="Refuse an enrollment recording scoring below this (cosine) against "
              "the voiceprint of the speaker's other recordings.")
@click.option("--duplicate", type=float, help="Warn (refuse with --strict) when a new voiceprint scores this much "
              "(cosine) against an enrolled one.")
@click.option("--reset", is_flag=True, help="Go back to the model's defaults.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def checks(obj: Context, consistency: float | None, duplicate: float | None, reset: bool, as_json: bool) -> None:
    """Show or set the thresholds of the enrollment checks.

    They are cosines of their own, apart from the decision thresholds. The defaults were set to
    refuse at most 1% of genuine speakers (measured: docs/calibration.md, "Enrollment checks").

    \b
    Example:
      voicebank checks
      voicebank checks --consistency 0.6
    """
    with obj.open() as bank:
        if consistency is not None or duplicate is not None or reset:
            bank.thresholds.set_enrollment_checks(consistency, duplicate, reset=reset)
        consistency, duplicate = bank.thresholds.enrollment_checks
    emit({"consistency": consistency, "duplicate": duplicate}, as_json,
         f"consistency: {consistency:.4f}\nduplicate voice: {duplicate:.4f}")


def calibration_text(status: dict, channel: str = "") -> str:
    """The thresholds and their promises, a line each (for `threshold` and `check`); ``channel``:
    a word that names the channel before each line (none for wideband)."""
    lines = []
    for which, s in status.items():
        on = {"margin": "2 x best - second best ", "best": "best "}.get(s.get("rule", ""), "")
        head = f"{channel}{which:<8} threshold {s['threshold']:.4f} on the {on}{s['score']} score"
        if s["method"] in ("default", "manual"):
            lines.append(f"{head}: {'set by hand' if s['method'] == 'manual' else 'not calibrated'}, "
                         "no measured promise (run `voicebank calibrate`)")
        elif which == "verify":
            target = "the equal-error rate" if s["method"] == "eer" else f"{s['target']:g} false accepts per claim"
            lines.append(f"{head}: {_how(s)} for {target}{_counted(s)}")
            lines += [lengths_text(s["lengths"])] if s.get("lengths") else []
        else:
            per = " per scan window" if which == "scan" else ""
            lines.append(f"{head}: {_how(s)} for {s['target']:g} unknown-person false alarms{per} with "
                         f"{_speakers(s['gallery_at_calibration'])}{_counted(s)}; with {s['gallery']} now: "
                         f"{s['expected_rate']:.2%} expected")
            lines += [lengths_text(s["lengths"])] if s.get("lengths") else []
            if s["outgrown"]:
                lines.append("WARNING: the bank has outgrown its calibration (more than 1.5x the promised rate): "
                             "run `voicebank calibrate`.")
    return "\n".join(lines)


def _speakers(count: int) -> str:
    return "1 speaker" if count == 1 else f"{count} speakers"


def _how(status: dict) -> str:
    """How a threshold was set, from where its unknown-person trials came."""
    if status["method"] != "auto":
        return "calibrated"
    s = status.get("sources") or {}
    on = [what for what, there in (("the bank's own recordings", s.get("own") or s.get("cohort")),
                                   ("the reference set of strangers", s.get("reference"))) if there]
    return f"measured automatically on {' and '.join(on) or 'the bank'}"


def _counted(status: dict) -> str:
    """How many trials stand behind a promise, and how far the rate may be above it (95%)."""
    if not status.get("trials"):
        return ""
    upper = "" if status.get("upper") is None else f", 95% upper bound {status['upper']:.2%}"
    return f" ({status['counted']} of {status['trials']} trials counted{upper})"


@main.group()
def db() -> None:
    """Database schema: upgrade and inspect.

    \b
    Example:
      voicebank --db postgresql://user@host/voices db upgrade
    """


@db.command()
@click.pass_obj
@handle_errors
def upgrade(obj: Context) -> None:
    """Upgrade the database schema to this voicebank's newest revision (back it up first).

    \b
    Example:
      voicebank db upgrade
    """
    from ..store import schema

    obj.refuse_on_replica("migrate the schema")
    with obj.engine() as engine:
        before = schema.current(engine)
        schema.upgrade(engine)
        after = schema.current(engine)
    click.echo(f"Schema at {after} (was {before or 'empty'}).")


@db.command()
@click.pass_obj
@handle_errors
def current(obj: Context) -> None:
    """Print the schema revision of the database and the newest this voicebank knows.

    \b
    Example:
      voicebank db current
    """
    from ..store import schema
    from ..errors import BankNotFoundError
    from ..store import resolve_url, sqlite_path

    file = sqlite_path(resolve_url(obj.db))
    try:
        missing = file is not None and not file.is_file()
    except OSError:  # a name the system cannot look up (over 255 bytes): no database there either
        missing = True
    if missing:  # connecting would create an empty file
        raise BankNotFoundError(f"no database at {file}: create a voicebank with `voicebank init`.")
    with obj.engine() as engine:
        click.echo(f"database: {schema.current(engine) or 'empty'}\nnewest:   {schema.head()}")


def parse_time(value: str) -> datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age like 30d, 12h, 15m."""
    from datetime import timedelta, timezone

    from ..errors import InvalidInputError

    units = {"d": "days", "h": "hours", "m": "minutes"}
    count = value[:-1]
    if count.isascii() and count.isdigit() and value[-1:] in units:  # not '²d': isdigit alone takes it
        try:
            return datetime.now(timezone.utc) - timedelta(**{units[value[-1]]: int(count)})
        except OverflowError:
            raise InvalidInputError(f"{value!r} reaches back before the year 1: give a smaller age "
                                    "or an ISO date.") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{value!r} is neither an ISO date/time (2026-11-01, 2026-11-01T08:00) "
                                "nor an age (30d, 12h, 15m).") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidInputError(f"{value!r} falls outside the years 1 to 9999 in UTC: give a date within them.") from None


MAX_LIMIT = 2**63 - 1  # SQLite's and PostgreSQL's largest integer: LIMIT takes no more


@main.group(invoke_without_command=True)
@click.option("--speaker", help="Only decisions that claimed or returned this speaker.")
@click.option("--since", metavar="TIME", help="From this time: ISO date/time (UTC) or an age like 7d, 12h.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True,
              help="At most this many, newest first.")
@JSON_OPTION
@click.pass_context
@handle_errors
def audit(ctx: click.Context, speaker: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """List identification and verification decisions, newest first.

    \b
    Example:
      voicebank audit --speaker alice --since 7d
      voicebank audit purge --before 2026-01-01 --yes
    """
    if ctx.invoked_subcommand is not None:
        return
    with ctx.obj.open() as bank:
        entries = bank.audit.entries(speaker=speaker, since=parse_time(since) if since else None, limit=limit)
    lines = [f"{e.at:%Y-%m-%d %H:%M:%S}  {e.operation:<8} {('claim ' + e.claimed) if e.claimed else '':<20} "
             f"-> {e.returned or 'nobody':<20} score {'-' if e.score is None else format(e.score, '.4f')} "
             f"(threshold {e.threshold:.4f}, {'accepted' if e.accepted else 'rejected'}) {e.client or ''}".rstrip()
             for e in entries]
    emit([e.to_dict() for e in entries], as_json, "\n".join(lines) if lines else "No decisions recorded.")


@audit.command()
@click.option("--before", required=True, metavar="TIME", help="Delete decisions older than this (ISO date/time or age like 90d).")
@click.option("--yes", is_flag=True, help="Delete without asking.")
@click.pass_obj
@handle_errors
def purge(obj: Context, before: str, yes: bool) -> None:
    """Delete decisions older than a time, to enforce a retention period.

    \b
    Example:
      voicebank audit purge --before 90d --yes
    """
    from ..errors import VoiceBankError

    moment = parse_time(before)
    if not yes and not (sys.stdin.isatty() and click.confirm(f"Delete every decision before {moment.isoformat()}?")):
        raise VoiceBankError("nothing deleted: add --yes to confirm.")
    with obj.open() as bank:
        count = bank.audit.purge(moment)
    click.echo(f"Deleted {count} decisions recorded before {moment.isoformat()}.")

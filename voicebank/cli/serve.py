"""Commands for the HTTP service: serve, apikey."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import click

from .base import JSON_OPTION, Context, emit, finite, handle_errors, main

# A day of audio: 5.5 GB of samples at 16 kHz, which a decode reserves in full (decode.BUDGET).
# The bound is there so that the count stays a number: 1e308 s times a sample rate is infinite.
MAX_SECONDS = 24 * 3600.0

# glibc serves blocks up to the size of the largest freed so far (up to 32 MB) from heaps that keep
# what is freed in them, so a server decoding long uploads held on to each take's audio, spectra and
# activations; fixed at 4 MB, larger blocks get mappings of their own, given back when freed
# (`python bench/upload_memory.py --takes 40`: docs/limits.md has the figures and the price).
MMAP_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)

log = logging.getLogger(__name__)


def return_large_blocks() -> bool:
    """Give blocks of :data:`MMAP_THRESHOLD` and more their own mappings, for this process (the
    server's; the library never does this). Leaves a ``MALLOC_MMAP_THRESHOLD_`` the user set, and
    C libraries other than glibc, alone. True where it was set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    log.debug("mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD, done)
    return done


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body accepted (bigger: 413).")
@click.option("--max-seconds", default=120.0, show_default=True, callback=finite,
              type=click.FloatRange(min=0, max=MAX_SECONDS, min_open=True), help="Longest recording accepted (longer: 422).")
@click.option("--workers", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="Requests that may use the bank at once; concurrent ones share model calls.")
@click.option("--live-sessions", type=click.IntRange(min=1), envvar="VOICEBANK_LIVE_SESSIONS", show_envvar=True,
              help="/live sessions open at once (more: 503). [default: 8]")
@click.option("--live-max-seconds", callback=finite, envvar="VOICEBANK_LIVE_MAX_SECONDS", show_envvar=True,
              type=click.FloatRange(min=0, max=MAX_SECONDS, min_open=True),
              help="Audio one /live session may send (more: close 1008). [default: 3600]")
@click.option("--live-idle-seconds", callback=finite, envvar="VOICEBANK_LIVE_IDLE_SECONDS", show_envvar=True,
              type=click.FloatRange(min=0, max=MAX_SECONDS, min_open=True),
              help="Wait for a /live session's key or next frame (longer: close 1008). [default: 10]")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="Server log level.")
@click.pass_obj
@handle_errors
def serve(obj: Context, host: str, port: int, max_upload_mb: float, max_seconds: float, workers: int,
          live_sessions: int | None, live_max_seconds: float | None, live_idle_seconds: float | None,
          log_level: str) -> None:
    """Serve the bank over HTTP (needs the `server` extra). Docs at http://HOST:PORT/docs, the
    operator's console at http://HOST:PORT/.

    Every endpoint but /health needs an API key (`voicebank apikey create`), sent as
    `Authorization: Bearer <key>`. Stop with Ctrl-C. The --live-* options bound the /live
    WebSocket (docs/live.md); each falls back to its VOICEBANK_LIVE_* variable.

    \b
    Example:
      voicebank apikey create frontdesk --role reader
      voicebank --db voicebank.db serve --host 127.0.0.1 --port 8000 --max-upload-mb 20 --max-seconds 120
      voicebank --db postgresql://reader@replica/voices --primary postgresql://app@primary/voices serve
      voicebank serve --live-sessions 4 --live-max-seconds 600 --live-idle-seconds 10
      curl -H "Authorization: Bearer $KEY" -F file=@unknown.wav http://127.0.0.1:8000/identify
    """
    from ..server import create_app, open_bank
    from ..server import serve as run_server
    from ..server.limits import max_bytes
    from ..server.live import LiveLimits

    max_bytes(max_upload_mb)  # before the model loads
    given = {"sessions": live_sessions, "max_seconds": live_max_seconds, "idle_seconds": live_idle_seconds}
    live = LiveLimits(**{field: value for field, value in given.items() if value is not None})
    return_large_blocks()
    with open_bank(obj.db, obj.model, obj.device, max_seconds=max_seconds, primary=obj.primary,
                   max_lag=obj.max_lag) as bank:
        run_server(create_app(bank, max_upload_mb=max_upload_mb, workers=workers, live=live), host, port, log_level)


@main.group()
def apikey() -> None:
    """Create, list and revoke the HTTP API's keys (stored only as hashes).

    \b
    Example:
      voicebank apikey create frontdesk --role reader
      voicebank apikey list
      voicebank apikey revoke frontdesk
    """


@apikey.command(name="create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["admin", "reader"]),
              help="reader: identify, verify, list, show. admin: also enroll, add and remove.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def create_key(obj: Context, name: str, role: str, as_json: bool) -> None:
    """Create an API key NAME and print it. It is shown only this once; only its hash is stored.

    The key alone goes to stdout (a note to stderr), so `KEY=$(voicebank apikey create ...)` works.

    \b
    Example:
      voicebank apikey create frontdesk --role reader
      voicebank apikey create ops --role admin --json
    """
    from ..apikeys import ApiKeyError

    with obj.open() as bank:
        record, key = bank.api_keys.create(name, role)
        try:
            emit({**record.to_dict(), "key": key}, as_json, key)
            sys.stdout.flush()  # now, not at exit: a key that cannot be shown must not be kept
        except OSError as exc:
            bank.api_keys.discard(key)
            raise ApiKeyError(f"cannot write the new key ({exc.strerror or exc}), so it was not kept: send the output "
                              f"somewhere it can be written, and create {record.name!r} again.") from None
    if not as_json:
        click.echo(f"Created the {role} key {record.name!r}. It is shown only this once: store it now.", err=True)


@apikey.command(name="list")
@JSON_OPTION
@click.pass_obj
@handle_errors
def list_keys(obj: Context, as_json: bool) -> None:
    """List the API keys: name, role, first characters, state. Never the keys themselves.

    \b
    Example:
      voicebank apikey list --json
    """
    with obj.open() as bank:
        keys = bank.api_keys.list()
    rows = [f"{k.name:<30} {k.role:<7} {k.prefix}...  created {k.created_at:%Y-%m-%d %H:%M}"
            + (f"  REVOKED {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "") for k in keys]
    emit([k.to_dict() for k in keys], as_json, "\n".join(rows) if rows else "No API keys.")


@apikey.command(name="revoke")
@click.argument("name")
@click.pass_obj
@handle_errors
def revoke_key(obj: Context, name: str) -> None:
    """Revoke the API key NAME; it stops working at once (running servers included).

    \b
    Example:
      voicebank apikey revoke frontdesk
    """
    with obj.open() as bank:
        bank.api_keys.revoke(name)
    click.echo(f"Revoked {name}.")

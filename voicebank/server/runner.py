"""Opening a bank for serving, and running the app: in the foreground (``voicebank serve``) or on a
background thread (tests, benchmarks, embedding the API in another program)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager, suppress
from typing import Any, Iterator

import numpy as np

from ..audio import AudioLimits
from .batching import BatchingEmbedder

DEFAULT_MAX_SECONDS = 120.0


@contextmanager
def open_bank(db: str | os.PathLike | None = None, model: Any = None, device: str | None = None,
              max_seconds: float = DEFAULT_MAX_SECONDS, max_batch: int = 32, warm: bool = True,
              primary: str | os.PathLike | None = None, max_lag: float | None = None) -> Iterator[Any]:
    """Open the bank in ``db`` for serving, and close it on exit: its model behind a
    :class:`BatchingEmbedder`, recordings capped at ``max_seconds``. ``model`` as for
    ``VoiceBank.open`` (default ``VOICEBANK_MODEL``, else the bank's own). With ``warm`` the model
    is loaded and checked against the bank now, so a wrong model fails at start-up rather than
    on the first request. ``primary``: ``db`` is a read replica of it, which may lag it by at most
    ``max_lag`` seconds (see ``VoiceBank.open``)."""
    from .. import runtime
    from ..bank import VoiceBank
    from ..embedding import load_embedder

    # A server lives long: importing torch once (1 to 2 s) buys the faster LSTM for every request
    # and live update (a resemblyzer bank runs its network in torch where torch is loaded).
    with suppress(ImportError):
        import torch

        runtime.torch_loaded(torch)  # the threads `configure` asked for, as every module that loads torch does

    if model is None or isinstance(model, (str, os.PathLike)):
        with VoiceBank.open(db, model, device=device, primary=primary, max_lag=max_lag) as probe:  # opening loads no model
            source = str(model or os.environ.get("VOICEBANK_MODEL") or probe.model_source)
        model = load_embedder(source, device)
    embedder = BatchingEmbedder(model, max_batch=max_batch)
    try:
        with VoiceBank.open(db, embedder, device=device, limits=AudioLimits(max_seconds=max_seconds),
                            primary=primary, max_lag=max_lag) as bank:
            if warm:  # one second of a quiet tone: loads the model and checks it against the bank
                tone = 0.1 * np.sin(2 * np.pi * 220.0 * np.arange(bank.sample_rate) / bank.sample_rate)
                bank.embed_samples([tone.astype(np.float32)])
            yield bank
    finally:
        embedder.close()


# A client that has sent part of a request (or nothing, after connecting) and then goes quiet for
# this long is disconnected: otherwise a few hundred stalled connections hold the server's sockets
# and upload buffers for ever (slowloris).
READ_TIMEOUT = 30.0
# A body must also keep an average pace: its deadline starts READ_TIMEOUT after its first byte and
# moves 1 s later for every MIN_BODY_RATE bytes received (Apache's mod_reqtimeout default,
# body=20,MinRate=500), so a byte every few seconds cannot hold a connection for ever while any real
# upload, even over a poor mobile link, gets through.
MIN_BODY_RATE = 500  # bytes per second


def protocol(read_timeout: float = READ_TIMEOUT) -> type:
    """uvicorn's h11 protocol, with deadlines on a request: its head (request line and headers)
    must arrive whole within ``read_timeout`` of its first byte (or of the connection), however
    the bytes are paced; its body may pause at most ``read_timeout`` between two reads, and must
    arrive within ``read_timeout`` plus 1 s per ``MIN_BODY_RATE`` bytes."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _on_head = False  # the armed deadline is the head's: more bytes of the head do not move it
        _body_end: float | None = None  # the loop time by which the body must be in, moved by each read

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._rearm()

        def data_received(self, data: bytes) -> None:
            if self._body_end is not None:
                self._body_end += len(data) / MIN_BODY_RATE
            super().data_received(data)
            self._rearm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._rearm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _rearm(self) -> None:
            """A deadline while the client owes us bytes: the head of a request it has begun (or,
            on a new connection, its first request), once for the whole head; or the rest of a
            body: each read renews the pause allowed, within the body's own deadline."""
            begun = bool(self.conn.trailing_data[0]) or self.cycle is None
            if self.conn.their_state is h11.SEND_BODY:
                self._disarm()
                now = self.loop.time()
                if self._body_end is None:
                    self._body_end = now + read_timeout
                self._deadline = self.loop.call_later(max(0.0, min(read_timeout, self._body_end - now)), self._stalled)
                return
            self._body_end = None
            if self.conn.their_state is h11.IDLE and begun:
                if not self._on_head:  # a byte every few seconds must not keep a head open for ever
                    self._disarm()
                    self._deadline = self.loop.call_later(read_timeout, self._stalled)
                    self._on_head = True
            else:
                self._disarm()

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._on_head = False

        def _stalled(self) -> None:
            if not self.transport.is_closing():
                client = "%s:%s" % self.client if self.client else "?"
                logging.getLogger(__name__).warning(
                    "closed the connection from %s: no complete request within %g s (or a body slower "
                    "than %d bytes/s)", client, read_timeout, MIN_BODY_RATE)
                self.transport.close()

    return TimedH11Protocol


class NoQueryStrings(logging.Filter):
    """uvicorn's access-log line without the query string: an API key sent as ``?key=...`` by a
    careless client must reach no log, at any level."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def serve(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    from .. import runtime

    if runtime.settings() is None:  # the server owns this process (unless its host configured it already)
        runtime.configure()

    _can_listen(host, port)
    logging.getLogger("uvicorn.access").addFilter(NoQueryStrings())
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug", http=protocol())


def _can_listen(host: str, port: int) -> None:
    """Refuse an address this process cannot listen on in one line: uvicorn said so in log lines
    after its startup and exited with 3 (a port in use, a host that is not this machine's)."""
    from ..errors import InvalidInputError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except OSError as exc:
        raise InvalidInputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): another program may hold "
                                "the port, or the host is not an address of this machine; choose another --port or "
                                "--host.") from None


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                    start_timeout: float = 30.0, read_timeout: float = READ_TIMEOUT) -> Iterator[str]:
    """Serve ``app`` on a background thread; yields its base URL (``port=0``: a free port, taken
    without a race because the socket is bound here and handed to uvicorn). Stops on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=10,
                                           http=protocol(read_timeout)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="voicebank-http", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

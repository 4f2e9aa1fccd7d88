"""Opening a bank for serving, and running the app: in the foreground (``voicebank serve``) or on a
background thread (tests, benchmarks, embedding the API in another program)."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from ..audio import AudioLimits
from .batching import BatchingEmbedder

DEFAULT_MAX_SECONDS = 120.0


@contextmanager
def open_bank(db: str | os.PathLike | None = None, model: Any = None, device: str | None = None,
              max_seconds: float = DEFAULT_MAX_SECONDS, max_batch: int = 32, warm: bool = True) -> Iterator[Any]:
    """Open the bank in ``db`` for serving, and close it on exit: its model behind a
    :class:`BatchingEmbedder`, recordings capped at ``max_seconds``. ``model`` as for
    ``VoiceBank.open`` (default ``VOICEBANK_MODEL``, else the bank's own). With ``warm`` the model
    is loaded and checked against the bank now, so a wrong model fails at start-up rather than
    on the first request."""
    from ..bank import VoiceBank
    from ..embedding import load_embedder

    if model is None or isinstance(model, (str, os.PathLike)):
        with VoiceBank.open(db, model, device=device) as probe:  # opening loads no model
            source = str(model or os.environ.get("VOICEBANK_MODEL") or probe.model_source)
        model = load_embedder(source, device)
    embedder = BatchingEmbedder(model, max_batch=max_batch)
    try:
        with VoiceBank.open(db, embedder, device=device, limits=AudioLimits(max_seconds=max_seconds)) as bank:
            if warm:  # one second of a quiet tone: loads the model and checks it against the bank
                tone = 0.1 * np.sin(2 * np.pi * 220.0 * np.arange(bank.sample_rate) / bank.sample_rate)
                bank.embed_samples([tone.astype(np.float32)])
            yield bank
    finally:
        embedder.close()


def serve(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                    start_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a background thread; yields its base URL (``port=0``: a free port, taken
    without a race because the socket is bound here and handed to uvicorn). Stops on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=10))
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

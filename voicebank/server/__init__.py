"""voicebank over HTTP (FastAPI): the optional `server` extra.

    from voicebank.server import create_app, open_bank, serve
    with open_bank("voicebank.db") as bank:
        serve(create_app(bank, max_upload_mb=20), "127.0.0.1", 8000)
"""

from __future__ import annotations

from importlib.util import find_spec

from ..errors import VoiceBankError

_missing = [name for name, modules in (("fastapi", ["fastapi"]), ("uvicorn", ["uvicorn"]),
                                      ("python-multipart", ["python_multipart", "multipart"]),
                                      ("fastapi-offline", ["fastapi_offline"]))
            if not any(find_spec(m) for m in modules)]
if _missing:  # pragma: no cover - depends on the installed extras
    raise VoiceBankError(f"the HTTP server needs the `server` extra ({', '.join(_missing)} missing): "
                         "pip install 'voicebank[server]'.")

from .app import create_app  # noqa: E402
from .runner import open_bank, serve, serve_in_thread  # noqa: E402

__all__ = ["create_app", "open_bank", "serve", "serve_in_thread"]

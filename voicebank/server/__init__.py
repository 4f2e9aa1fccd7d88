"""voicebank over HTTP (FastAPI): the optional `server` extra."""

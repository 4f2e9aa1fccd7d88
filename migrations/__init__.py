"""voicebank's Alembic migrations (installed as the package ``voicebank.migrations``)."""

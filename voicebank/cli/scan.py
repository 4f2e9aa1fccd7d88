"""The scan command: who spoke when in a long recording."""

"""The command's standard output failing under it: ``voicebank audit > /dev/full``, a full disk,
a closed terminal. That is one ``Error:`` line and exit code 2, like any other error, rather than a
traceback from whichever ``click.echo`` (or ``--help``) happened to write first."""

from __future__ import annotations

import os
import sys
from typing import Any

import click


class WatchedStdout:
    """``sys.stdout``, remembering an error in writing to it, so that a command's own ``OSError``
    (a file it reads) is told apart from one of its output. Everything else is the stream's own."""

    def __init__(self, stream: Any):
        self._stream, self.error = stream, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def write(self, text: Any) -> int:
        if self._stream is None:  # started with stdout closed (>&-)
            self.error = OSError(9, "standard output is closed")
            raise self.error
        try:
            return self._stream.write(text)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            self.error = exc
            raise


class Group(click.Group):
    """The ``voicebank`` group: a failure to write the output is an ``Error:`` line on stderr."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        stdout = sys.stdout
        watched = sys.stdout = WatchedStdout(stdout)
        try:
            return super().main(*args, **kwargs)
        except OSError as exc:
            if exc is not watched.error:
                raise
            try:
                click.echo(f"Error: cannot write the output ({exc.strerror or exc}): free space where it goes, or "
                           "send it elsewhere.", err=True)
            except OSError:
                pass  # stderr is gone too: the exit code is all that is left
            sys.exit(2)
        finally:
            # what could not be written stays in the stream's buffer, and Python would try again at
            # exit and print a traceback of its own: the output goes nowhere from here on
            sys.stdout = stdout if watched.error is None else open(os.devnull, "w")

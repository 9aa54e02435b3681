"""Errors: every failure a user can cause or fix is an AudioguideError.

The CLI turns these into a one-line ``Error: ...`` and a non-zero exit; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import signal


class AudioguideError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class RoutineError(AudioguideError):
    """A routine file that cannot be read, parsed or validated."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        self.detail = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class OptionError(AudioguideError):
    """A render option (tempo, pattern, length, ...) outside what audioguide accepts.

    ``field`` names the option in the library's words (``breaths_per_min``), so the CLI can
    name its flag instead; ``detail`` is the message without the field.
    """

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}" if field else message)


class SpeechError(AudioguideError):
    """The text-to-speech engine is missing, failed, or produced unusable audio."""


class SoundFileError(AudioguideError):
    """A user-supplied sound file is missing, unreadable, or needs ffmpeg."""


class ExportError(AudioguideError):
    """Writing the output (encoding, tagging, files and folders) failed."""


class ServeError(AudioguideError):
    """Serving a folder failed: nothing rendered there, the port is taken, an extra is missing."""


# The signals that stop a run as Ctrl-C does (those this platform has).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A signal that stops a run (Ctrl-C, SIGTERM, SIGHUP), raised in the main thread so that
    everything cleans up as on Ctrl-C; the process exits with 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

"""glibc's own calls (its malloc's tuning), where the C library is glibc: Linux but musl."""

from __future__ import annotations

import os
from typing import Any


def glibc() -> Any | None:
    """The C library, when it is glibc; None on macOS, Windows and musl."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None
    if version is None:
        return None
    import ctypes

    return ctypes.CDLL(None)

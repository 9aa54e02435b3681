"""Values costly to make that a render's worker threads share: made once per key, kept.

``functools.lru_cache`` keeps a value once made, but two threads that ask for it while it is
being made both make it: two tracks' workers meeting their first breath tone, bell, bed or
noise breath together each made it (the noise breath's bands were 60 MB of transforms each,
doubling a render's peak memory). ``made_once`` is ``lru_cache`` with a lock per key: a thread
asking for a key being made waits for it; other keys are made meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from functools import lru_cache, update_wrapper
from typing import Generic, TypeVar

T = TypeVar("T")


class MadeOnce(Generic[T]):
    """``make`` (called with hashable positional arguments), its values kept as
    ``lru_cache(maxsize)`` keeps them, each made by one thread at a time."""

    def __init__(self, make: Callable[..., T], maxsize: int) -> None:
        self._cached = lru_cache(maxsize=maxsize)(make)
        self._locks: dict[tuple[Hashable, ...], threading.Lock] = {}
        self._guard = threading.Lock()
        update_wrapper(self, make)

    def __call__(self, *args: Hashable) -> T:
        with self._guard:
            lock = self._locks.setdefault(args, threading.Lock())
        with lock:
            return self._cached(*args)

    def cache_clear(self) -> None:
        """Forget every value kept (the next call for each makes it again)."""
        with self._guard:
            self._cached.cache_clear()
            self._locks.clear()


def made_once(maxsize: int) -> Callable[[Callable[..., T]], MadeOnce[T]]:
    """Decorate a function of hashable positional arguments: ``lru_cache(maxsize)`` whose
    value for a key is made by one thread while any other asking for it waits."""

    def decorate(make: Callable[..., T]) -> MadeOnce[T]:
        return MadeOnce(make, maxsize)

    return decorate

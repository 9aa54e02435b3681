"""made_once: a cached value that worker threads asking at once make once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from audioguide.once import made_once


def test_threads_asking_for_one_key_at_once_make_it_once_and_share_it():
    made: list[int] = []
    together = threading.Barrier(4)

    @made_once(maxsize=4)
    def square(x: int) -> list[int]:
        made.append(x)
        time.sleep(0.1)  # long enough for every thread to arrive while it is made
        return [x * x]

    def ask() -> list[int]:
        together.wait(30)
        return square(3)

    with ThreadPoolExecutor(4) as pool:
        got = [f.result(timeout=60) for f in [pool.submit(ask) for _ in range(4)]]
    assert made == [3]
    assert all(value is got[0] for value in got) and got[0] == [9]


def test_other_keys_are_made_meanwhile():
    # One key's making does not hold up another's: two slow keys at once take one wait.
    started: list[int] = []
    both = threading.Barrier(2)

    @made_once(maxsize=4)
    def slow(x: int) -> int:
        started.append(x)
        both.wait(30)  # each waits for the other to be making its own key at the same time
        return x

    with ThreadPoolExecutor(2) as pool:
        assert sorted(f.result(timeout=60) for f in [pool.submit(slow, k) for k in (1, 2)]) == [
            1,
            2,
        ]
    assert sorted(started) == [1, 2]


def test_a_failure_is_raised_to_each_caller_and_not_kept():
    calls: list[int] = []

    @made_once(maxsize=4)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise OSError("not yet")
        return x

    with pytest.raises(OSError):
        flaky(1)
    assert flaky(1) == 1 and flaky(1) == 1
    assert calls == [1, 1]


def test_clearing_forgets_the_values_and_the_name_is_the_function_s():
    made: list[int] = []

    @made_once(maxsize=2)
    def value(x: int) -> int:
        """A doc."""
        made.append(x)
        return x

    value(1)
    value(1)
    value.cache_clear()
    value(1)
    assert made == [1, 1]
    assert value.__name__ == "value" and value.__doc__ == "A doc."

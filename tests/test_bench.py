"""scripts/bench.py's own measurement: what it reads off a process is the process's, not the
bench's sampling.

Not a speed target: these check how a figure is taken, with the sampling slowed so far that a
figure taken the wrong way is off by seconds, whatever the machine.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts/bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["bench"]


def test_wall_time_ends_with_the_process_not_with_the_samplers_next_round(bench, monkeypatch):
    # Sampled every 5 s, a child that exits at once: a wall time taken after the sampler's
    # next wake-up reads 5 s or more (the bug: every figure rounded up to the next 100 ms).
    monkeypatch.setattr(bench, "SAMPLE_S", 5.0)
    wall_s, *_ = bench.measured([sys.executable, "-c", "pass"], dict(os.environ))
    assert wall_s < 2.5, f"{wall_s:.2f} s for a process that exits at once"


def test_a_verdict_read_over_enough_rounds_does_not_ask_for_the_same_again(bench):
    near_line = [1.7, 1.75, 1.9]
    assert "--repeat 9" in bench._rounds_verdict(True, (near_line, 1.8))
    nine = [1.7] * 5 + [1.9] * 4
    verdict = bench._rounds_verdict(True, (nine, 1.8))
    assert "--repeat" not in verdict and "the median of 9 decides" in verdict
    assert bench._rounds_verdict(False, ([1.9] * 9, 1.8)) == "NOT met"

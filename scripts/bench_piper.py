"""Time and memory of back-pain with the Piper voice, cold and warm, against espeak-ng warm.

Each render is a fresh ``audioguide render back-pain`` process with its own speech cache (cold:
empty; warm: the cold run's). Memory is sampled every 50 ms over the render and all its
worker processes: the largest single process (what ``ru_maxrss`` reports) and the sum over
them. CPU time is the render's and its reaped workers'. Needs the ``natural`` extra.

    python scripts/bench_piper.py [--jobs 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(stat[1])
    found = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measured(args: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """(wall s, CPU s, peak MB of one process, peak MB summed over processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    one = total = 0.0
    while proc.poll() is None:
        sizes = [_rss_mb(pid) for pid in _tree(proc.pid)]
        one, total = max(one, *sizes), max(total, sum(sizes))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, one, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores, --jobs {args.jobs}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        command = [sys.executable, "-m", "audioguide", "render", "back-pain", "-q"]
        command += ["--jobs", str(args.jobs)]
        runs = [("piper cold", "en_US-joe-medium", "piper")]
        runs += [("piper warm", "en_US-joe-medium", "piper")] * args.repeat
        runs += [("espeak warm", "gmw/en-us", "espeak")] * (args.repeat + 1)
        for name, voice, cache in runs:
            env = {**os.environ, "AUDIOGUIDE_CACHE_DIR": str(work / cache)}
            env["AUDIOGUIDE_VOICE"] = voice
            wall, cpu, one, total = measured([*command, "-o", str(work / "out")], env)
            print(
                f"{name:<12} {wall:6.1f} s wall {cpu:6.1f} s CPU  peak {one:4.0f} MB per "
                f"process, {total:4.0f} MB summed  (load {os.getloadavg()[0]:.1f})"
            )
    print("(the first espeak run fills its cache: it is cold)")


if __name__ == "__main__":
    main()

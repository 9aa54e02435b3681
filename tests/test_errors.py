"""Bad input and faults, through the CLI: every row of docs/errors.md is a case here.

Each case runs the real command and checks the exact message the table documents, the exit
status, that no traceback escaped, and that nothing was written or the previous output was
left as it was with no temporary folder behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY
from conftest import run_cli as run

from audioguide.export import mp3 as session_writer
from audioguide.export.ownership import MANIFEST_NAME, write_manifest
from audioguide.export.staging import STAGING_MARKER

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
# | `case` | bad input | `message` | exit |
ROW = re.compile(
    r"^\| `(?P<case>[a-z0-9-]+)` \| (?P<input>.+?) "
    r"\| `(?P<message>[^`]+)` \| (?P<exit>\d+) \|$"
)

ONE_SECTION = "title: Test\nsections:\n  - title: One\n    steps:\n"


def wav(
    channels: int = 1,
    rate: int = 8000,
    bits: int = 16,
    data: bytes = b"\x00\x10" * 800,
    data_size: int | None = None,
) -> bytes:
    """A WAV file with the header fields given, right or wrong."""
    align = channels * bits // 8 or 2
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align & 0xFFFFFFFF, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# Sound files in the working folder, each named in a case below.
SOUND_FILES = {
    "broken.wav": b"RIFF" + b"\x00\x01garbage" * 64,
    "cut.wav": wav(data=b"\x00\x10" * 799 + b"\x00", data_size=1600),
    "mono-less.wav": wav(channels=0),
    "no-bits.wav": wav(bits=0),
    "seven-bits.wav": wav(bits=7),
    "no-rate.wav": wav(rate=0),
    "four-ghz.wav": wav(rate=4_000_000_000),
    "long.wav": wav(bits=8, data=b"\x90" * 61 * 8000),
}


def bell_routine(name: str, sound: str = "bell", step: str = "bell: 3") -> str:
    """A routine whose ``sounds.bell`` (or ``sounds.ambient``) is ``name``: no speech."""
    return f"title: Test\nsounds: {{{sound}: {name}}}\nsections:\n  - title: One\n" + (
        f"    steps: [{step}]\n"
    )


# case: (routine.yaml text, or None for no file; command line after "audioguide")
ROUTINE_CASES: dict[str, tuple[str | bytes | None, list[str]]] = {
    "malformed-yaml": ("title: Test\nsections:\n  - title: [unclosed\n", []),
    "tab-indent": ("title: Test\nsections:\n\t- title: One\n", []),
    "wrong-type": (ONE_SECTION + "      - pause: soon\n", []),
    "list-expected": ("title: Test\nsections: Warm up\n", []),
    "unknown-step": (ONE_SECTION + "      - breath: {cycles: 3}\n", []),
    "unknown-field": (ONE_SECTION + "      - say: Hello.\n        pasue: 2\n", []),
    "negative-duration": (ONE_SECTION + "      - pause: -3\n", []),
    "huge-duration": (ONE_SECTION + "      - pause: 100000\n", []),
    "negative-count": (ONE_SECTION + "      - repeat: {times: -2, steps: [pause: 1]}\n", []),
    "huge-count": (ONE_SECTION + "      - breathe: {cycles: 1000000000}\n", []),
    "lasts-days": (
        ONE_SECTION + "      - repeat:\n          times: 100\n          steps:\n"
        "            - repeat: {times: 100, steps: [pause: 60]}\n",
        [],
    ),
    "empty-file": ("", []),
    "no-sections": ("title: Test\nsections: []\n", []),
    "no-steps": ("title: Test\nsections:\n  - title: One\n    steps: []\n", []),
    "absurd-tempo-in-file": (
        "title: Test\nbreath: {tempo: 500}\nsections:\n  - title: One\n"
        "    steps: [breathe: {cycles: 2}]\n",
        [],
    ),
    "python-tag": ("title: !!python/object/apply:os.mkdir [pwned]\nsections: []\n", []),
    "not-utf8": (b"title: caf\xe9\n", []),
    "missing-file": (None, []),
    "unknown-routine": (None, ["render", "back-pian"]),
    "routine-is-a-folder": (None, ["render", "."]),
    "not-utf8-but-utf16": ("title: Test\n".encode("utf-16-le"), []),
    "nested-too-deep": (ONE_SECTION + "      - say: " + "[" * 5000 + "]" * 5000 + "\n", []),
    "surrogate-escape": (ONE_SECTION + '      - say: "\\ud83e\\uddd8 Breathe."\n', []),
    "control-escape": (ONE_SECTION + '      - say: "\\e]0;pwned\\a"\n', []),
    "nothing-to-pronounce": (ONE_SECTION + "      - say: '...'\n", []),
    "huge-integer": (ONE_SECTION + "      - pause: " + "9" * 400 + "\n", []),
    "bad-tagged-value": (
        ONE_SECTION + "      - breathe: {cycles: 3, time_left: !!bool maybe}\n",
        [],
    ),
    "dotless-float": (ONE_SECTION + "      - pause: 1e3\n", []),
    "bad-pronounce-entry": (
        "title: Test\npronounce: {dantian: {espeak: dahn tyen}}\nsections:\n  - title: One\n"
        "    steps: [say: Feel the dantian.]\n",
        [],
    ),
    "several-mistakes": (ONE_SECTION + "      - pause: -3\n      - bell: 100\n", []),
    "tempo-zero": (TINY, ["--breath-tempo", "0"]),
    "tempo-huge": (TINY, ["--breath-tempo", "1000"]),
    "tempo-nan": (TINY, ["--breath-tempo", "nan"]),
    "tempo-curve-end": (TINY, ["--breath-tempo", "6:30"]),
    "no-position-variant": (TINY, ["--position", "seated"]),
    "bad-pattern": (TINY, ["--breath-pattern", "4-0"]),
    "huge-minutes": (TINY, ["--minutes", "100000"]),
    "minutes-nan": (TINY, ["--minutes", "nan"]),
    "move-tempo-infinite": (TINY, ["--move-tempo", "inf"]),
    "loudness-nan": (TINY, ["--loudness", "nan"]),
    "rate-slow": (TINY, ["--rate", "10"]),
    "seed-negative": (TINY, ["--seed", "-1"]),
    "jobs-zero": (TINY, ["--jobs", "0"]),
    "feed-url-not-web": (TINY, ["--feed-url", "ftp://example.org/"]),
    "serve-no-folder": (None, ["serve", "nosuch"]),
    "bell-file-missing": (
        "title: Test\nsounds: {bell: nosuch.wav}\nsections:\n  - title: One\n"
        "    steps: [bell: 3]\n",
        [],
    ),
    "bell-file-unreadable": (bell_routine("broken.wav"), []),
    "wav-cut-mid-sample": (bell_routine("cut.wav"), []),
    "wav-no-channels": (bell_routine("mono-less.wav"), []),
    "wav-zero-bits": (bell_routine("no-bits.wav"), []),
    "wav-seven-bits": (bell_routine("seven-bits.wav"), []),
    "wav-zero-rate": (bell_routine("no-rate.wav"), []),
    "wav-huge-rate": (bell_routine("four-ghz.wav", "ambient", "pause: 3"), []),
    "bell-too-long": (bell_routine("long.wav"), []),
    "bell-option-missing": (TINY, ["--bell-file", "nosuch.wav"]),
    "ambient-missing": (TINY, ["--ambient", "nosuch.wav"]),
    "output-not-a-folder": (TINY, ["-o", "a-file/out"]),
    "voice-unknown": (TINY, ["--voice", "nosuch"]),
    "voice-wrong-language": (TINY, ["--voice", "de"]),
    "voice-missing-model": (TINY, ["--voice", "missing.onnx"]),
    "voice-not-a-model": (TINY, ["--voice", "broken.onnx"]),
}
# Cases that need the natural extra (Piper); skipped with the reason where it is missing.
PIPER_CASES = {"voice-missing-model", "voice-not-a-model"}
PIPER_CONFIG = {
    "audio": {"sample_rate": 22050},
    "espeak": {"voice": "en-us"},
    "language": {"code": "en_US"},
    "phoneme_type": "espeak",
    "num_symbols": 4,
    "phoneme_id_map": {"_": [0], "^": [1], "$": [2], "a": [3]},
}


def documented() -> dict[str, tuple[str, int]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match["case"]] = (match["message"], int(match["exit"]))
    return rows


FAULT_CASES = (
    "output-not-writable",
    "disk-full",
    "interrupted",
    "terminated",
    "hangup",
    "old-not-movable",
    "interrupted-at-start",
    "stdout-full",
)
CURRENT_UMASK = os.umask(0o022)  # read once, here too
os.umask(CURRENT_UMASK)
# Checked by tests/test_espeak.py, in a process of its own (an environment).
SPEECH_CASES = ("espeak-data-missing",)


def _not_ours(folder: Path) -> None:
    (folder / "docs").mkdir()
    (folder / "song.mp3").write_bytes(b"a song")


def _files_added(folder: Path) -> None:
    (folder / "01 - Old.mp3").write_bytes(b"the previous render")
    write_manifest(folder)
    (folder / "notes.txt").write_text("mine")


def _holds_routine(folder: Path) -> None:
    (folder / "routine.yaml").write_text(TINY, encoding="utf-8")


def _zip_not_ours(folder: Path) -> None:
    (folder.parent / "routine.zip").write_bytes(b"PK mine")


# case: (what is at out/routine/ before the render, command line after "audioguide")
OWNERSHIP_CASES = {
    "output-not-ours": (_not_ours, ["render", "routine.yaml", "-o", "out"]),
    "output-files-added": (_files_added, ["render", "routine.yaml", "-o", "out"]),
    "output-holds-routine": (
        _holds_routine,
        ["render", "out/routine/routine.yaml", "-o", "out", "--force"],
    ),
    "zip-not-ours": (_zip_not_ours, ["render", "routine.yaml", "-o", "out", "--zip"]),
}


def test_every_documented_row_has_a_case_and_every_case_a_row():
    assert set(documented()) == (
        set(ROUTINE_CASES) | set(FAULT_CASES) | set(OWNERSHIP_CASES) | set(SPEECH_CASES)
    )


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A working folder, so messages show the short relative names the table documents."""
    monkeypatch.chdir(tmp_path)
    for name, data in SOUND_FILES.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x01not a model" * 64)
    (tmp_path / "broken.onnx.json").write_text(json.dumps(PIPER_CONFIG), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("case", sorted(ROUTINE_CASES))
def test_bad_input_gets_the_documented_error(case, workdir):
    if case in PIPER_CASES:
        pytest.importorskip("piper", reason="Piper is not installed: pip install '.[natural]'")
    message, status = documented()[case]
    text, extra = ROUTINE_CASES[case]
    if isinstance(text, bytes):
        (workdir / "routine.yaml").write_bytes(text)
    elif text is not None:
        (workdir / "routine.yaml").write_text(text, encoding="utf-8")
    args = extra if extra[:1] in (["render"], ["serve"]) else ["render", "routine.yaml", *extra]
    code, output = run(args)
    assert (code, last_line(output)) == (status, message)
    assert "Traceback" not in output
    assert not (workdir / "pwned").exists()  # no object was ever constructed
    assert not (workdir / "audioguide-out").exists()  # nothing written


@pytest.mark.parametrize("case", sorted(OWNERSHIP_CASES))
def test_a_folder_not_provably_ours_is_refused_untouched(case, workdir):
    message, status = documented()[case]
    setup, args = OWNERSHIP_CASES[case]
    (workdir / "routine.yaml").write_text(TINY, encoding="utf-8")
    folder = workdir / "out" / "routine"
    folder.mkdir(parents=True)
    setup(folder)
    before = {p: p.read_bytes() if p.is_file() else None for p in workdir.rglob("*")}
    code, output = run(args)
    assert (code, last_line(output)) == (status, message)
    assert "Traceback" not in output
    assert {p: p.read_bytes() if p.is_file() else None for p in workdir.rglob("*")} == before


# ---------------------------------------------------------------------------------------------
# Faults while writing: the previous output stays, no temporary folder is left behind


@pytest.fixture
def previous(workdir) -> Path:
    (workdir / "routine.yaml").write_text(TINY, encoding="utf-8")
    folder = workdir / "out" / "routine"
    folder.mkdir(parents=True)
    (folder / "01 - Old.mp3").write_bytes(b"the previous render")
    write_manifest(folder)  # as a render leaves it: the folder is provably audioguide's
    return folder


def assert_left_intact(previous: Path) -> None:
    assert sorted(p.name for p in previous.parent.iterdir()) == ["routine"]
    assert sorted(p.name for p in previous.iterdir()) == [MANIFEST_NAME, "01 - Old.mp3"]
    assert (previous / "01 - Old.mp3").read_bytes() == b"the previous render"


def check_fault(case: str, previous: Path) -> None:
    message, status = documented()[case]
    code, output = run(["render", "routine.yaml", "-o", "out"])
    assert (code, last_line(output)) == (status, message)
    assert "Traceback" not in output
    assert_left_intact(previous)


def test_output_not_writable(previous, monkeypatch):
    # Root writes anywhere, so the refusal is simulated where the staging folder is made.
    real_mkdtemp = tempfile.mkdtemp

    def refuse(*args, **kwargs):
        if Path(kwargs.get("dir") or ".").resolve() == previous.parent.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_mkdtemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    check_fault("output-not-writable", previous)


def test_disk_full(previous, monkeypatch):
    calls = []
    real_write_bytes = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if ".partial" in str(self.parent):
            calls.append(self.name)
            # A failed write() names no file, as the real one does.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    check_fault("disk-full", previous)
    assert calls  # the fault was really hit while writing the output


def test_interrupted_in_the_middle_of_encoding(previous, monkeypatch):
    real_finish = session_writer.TrackEncoder.finish
    encoded = []

    def interrupted(self):
        if encoded:
            raise KeyboardInterrupt
        encoded.append(1)
        return real_finish(self)

    monkeypatch.setattr(session_writer.TrackEncoder, "finish", interrupted)
    check_fault("interrupted", previous)
    assert encoded  # one track was written into the staging folder before the interrupt


LONG = "title: Long\nsections:\n" + "".join(
    f"  - title: Part {i}\n    steps:\n      - say: Part {i}.\n      - pause: 240\n"
    for i in range(1, 7)
)


def previous_render_of_long(workdir: Path) -> Path:
    """A previous render's folder in out/routine/ for a routine that takes a while."""
    (workdir / "routine.yaml").write_text(LONG, encoding="utf-8")
    folder = workdir / "out" / "routine"
    folder.mkdir(parents=True)
    (folder / "01 - Old.mp3").write_bytes(b"the previous render")
    write_manifest(folder)
    return folder


def start_render(workdir: Path) -> subprocess.Popen[str]:
    """``audioguide render routine.yaml -o out`` in a subprocess of its own, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "audioguide", "render", "routine.yaml", "-o", "out"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def render_until_encoding(workdir: Path) -> subprocess.Popen[str]:
    """A real render in a subprocess, once it is writing into its staging folder."""
    proc = start_render(workdir)
    deadline = time.monotonic() + 120
    while not list((workdir / "out").glob(".routine.*.partial")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the render never started writing: {proc.communicate()}")
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize(
    ("case", "signum"),
    [("interrupted", signal.SIGINT), ("terminated", signal.SIGTERM), ("hangup", signal.SIGHUP)],
)
def test_a_signal_in_the_middle_of_encoding(workdir, case, signum):
    """A real signal to a real render (Ctrl-C, kill, the terminal closed): one line, the
    previous output intact, no staging folder left behind."""
    folder = previous_render_of_long(workdir)
    proc = render_until_encoding(workdir)
    try:
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    message, status = documented()[case]
    assert (proc.returncode, err.strip().splitlines()[-1]) == (status, message), err
    assert "Traceback" not in err
    assert_left_intact(folder)


def staging_marker(folder: Path, pid: int) -> None:
    (folder / STAGING_MARKER).write_text(
        json.dumps({"pid": pid, "host": socket.gethostname()}), encoding="utf-8"
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_render_removes_what_a_killed_render_left_and_nothing_else(workdir):
    folder = previous_render_of_long(workdir)
    proc = render_until_encoding(workdir)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    (left,) = (workdir / "out").glob(".routine.*.partial")
    # Not ours to remove: a look-alike without our marker, and one of a render still running.
    foreign = workdir / "out" / ".routine.mine.partial"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's")
    running = workdir / "out" / ".routine.running.partial"
    running.mkdir()
    staging_marker(running, os.getpid())
    (workdir / "routine.yaml").write_text(TINY, encoding="utf-8")
    code, output = run(["render", "routine.yaml", "-o", "out", "-q", "--force"])
    assert code == 0, output
    assert not left.exists()
    assert (foreign / "notes.txt").read_text() == "a user's"
    assert running.is_dir()
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted(
        [".routine.mine.partial", ".routine.running.partial", "routine"]
    )


def test_a_render_killed_before_it_marked_its_staging_folder_leaves_nothing_for_good(workdir):
    """Killed between making its staging folder and writing the marker into it: the folder's
    name carries the render's process id, so the next render removes it once that process is
    gone, and only while it holds nothing but (at most) the marker."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = workdir / "out"
    out.mkdir()
    empty = out / f".routine.{gone.pid}.abc123.partial"
    empty.mkdir()
    half = out / f".routine.{gone.pid}.def456.partial"
    half.mkdir()
    (half / STAGING_MARKER).write_text('{"pid": ', encoding="utf-8")  # cut off mid-write
    holding = out / f".routine.{gone.pid}.ghi789.partial"
    holding.mkdir()
    (holding / "notes.txt").write_text("a user's")
    alive = out / f".routine.{os.getpid()}.jkl012.partial"
    alive.mkdir()
    (workdir / "routine.yaml").write_text(TINY, encoding="utf-8")
    code, output = run(["render", "routine.yaml", "-o", "out", "-q"])
    assert code == 0, output
    assert not empty.exists() and not half.exists()
    assert (holding / "notes.txt").read_text() == "a user's"
    assert alive.is_dir()


def test_ctrl_c_during_start_up(workdir):
    """Ctrl-C while the interpreter is still importing: one line, exit 130."""
    (workdir / "routine.yaml").write_text(TINY, encoding="utf-8")
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc to see when the imports are under way")
    proc = start_render(workdir)
    try:
        # As soon as numpy's library is loaded, the imports are under way.
        deadline = time.monotonic() + 60
        while "numpy" not in Path(f"/proc/{proc.pid}/maps").read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    message, status = documented()["interrupted-at-start"]
    assert (proc.returncode, err.strip()) == (status, message)
    assert not (workdir / "out").exists()


def test_standard_output_on_a_full_device(workdir):
    """``audioguide render ... > /dev/full``: the render is written, then one line."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    (workdir / "routine.yaml").write_text(TINY, encoding="utf-8")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "audioguide", "render", "routine.yaml", "-o", "out"],
            cwd=workdir,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    message, status = documented()["stdout-full"]
    assert (proc.returncode, proc.stderr.strip()) == (status, message)
    assert (workdir / "out" / "routine" / MANIFEST_NAME).is_file()  # the render was done


def test_previous_output_that_cannot_be_moved_aside(previous, monkeypatch):
    real_replace = os.replace

    def refuse(src, dst):
        if Path(src).resolve() == previous.resolve():
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    check_fault("old-not-movable", previous)


def test_previous_output_that_cannot_all_be_deleted_is_named(previous, monkeypatch):
    real_unlink = os.unlink

    def refuse(path, *args, **kwargs):
        if os.fspath(path).endswith("01 - Old.mp3"):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    code, output = run(["render", "routine.yaml", "-o", "out"])
    assert code == 0, output
    (old,) = (previous.parent).glob(".routine.*.old")
    assert str(os.getpid()) not in old.name  # made by mkdtemp, not named after the process
    warning = f"Warning: out/{old.name}: the previous output, moved aside, could not all be "
    warning += "removed (Operation not permitted); the next render removes it, or delete it"
    assert any(line.startswith(warning) for line in output.splitlines()), output
    monkeypatch.setattr(os, "unlink", real_unlink)
    staging_marker(old, dead_pid())  # as if that render were another process, now gone
    code, output = run(["render", "routine.yaml", "-o", "out", "-q"])
    assert code == 0, output
    assert not old.exists()  # ours: the next render removes it


def test_a_fresh_render_that_fails_leaves_no_folder(workdir, monkeypatch):
    (workdir / "routine.yaml").write_text(TINY, encoding="utf-8")
    real_write_bytes = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if ".partial" in str(self.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    code, output = run(["render", "routine.yaml", "-o", "new/out"])
    assert code == 1, output
    assert last_line(output).startswith("Error: new/out/routine: the disk is full")
    assert not (workdir / "new").exists()  # the folders made for the output are gone too


def test_the_umask_is_read_once_not_changed_by_a_render(previous, monkeypatch):
    # Setting the umask to read it is process-wide: another thread creating a file meanwhile
    # would get the wrong mode.
    def umask(mask: int) -> int:
        raise AssertionError("os.umask called during a render")

    monkeypatch.setattr(os, "umask", umask)
    code, output = run(["render", "routine.yaml", "-o", "out", "--zip", "-q"])
    assert code == 0, output
    assert (previous / "cover.png").stat().st_mode & 0o777 == 0o666 & ~CURRENT_UMASK


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@needs_ffmpeg
@pytest.mark.parametrize("audio_format", ["flac", "wav"])
@pytest.mark.parametrize("disk_full", [False, True])
def test_other_formats_leave_nothing_in_the_temporary_folder(
    previous, monkeypatch, tmp_path_factory, audio_format, disk_full
):
    temporary = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.setenv("TMPDIR", str(temporary))
    if disk_full:  # ffmpeg fails as it does when the disk fills
        tools = tmp_path_factory.mktemp("tools")
        (tools / "ffmpeg").write_text("#!/bin/sh\necho 'No space left on device' >&2\nexit 1\n")
        (tools / "ffmpeg").chmod(0o755)
        monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    code, output = run(["render", "routine.yaml", "-o", "out", "--format", audio_format])
    assert code == (1 if disk_full else 0), output
    assert "Traceback" not in output
    assert list(temporary.iterdir()) == []
    assert not list(previous.parent.glob(".routine.*"))


def test_a_title_never_writes_outside_the_output_folder(workdir):
    (workdir / "routine.yaml").write_text(
        "title: ../../Escape\nsections:\n"
        "  - title: ../../../etc/x\n    steps: [pause: 1]\n"
        "  - title: a/b\\\\c\n    steps: [pause: 1]\n"
        "  - title: ..\n    steps: [pause: 1]\n",
        encoding="utf-8",
    )
    (workdir / "inside").mkdir()
    code, output = run(["render", "routine.yaml", "-o", "inside/out"])
    assert code == 0, output
    everything = {p.relative_to(workdir).as_posix() for p in workdir.rglob("*")}
    outside = {p for p in everything if not p.startswith("inside") and p not in ("routine.yaml",)}
    assert outside == {*SOUND_FILES, "a-file", "broken.onnx", "broken.onnx.json"}
    folder = workdir / "inside" / "out" / "routine"
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".mp3")
    assert len(names) == 4  # three tracks and the full session
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)

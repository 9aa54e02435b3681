"""Render orchestration: threads that agree with one thread, bounded work in flight, progress,
and what happens to queued work when one track fails or the user presses Ctrl-C.

Fast: the fake speech engine, the real mixer and the real MP3 encoder, on short routines.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time

import pytest
from conftest import TINY

from audioguide import pipeline
from audioguide.errors import ExportError
from audioguide.pipeline import SessionOptions, render_session
from audioguide.routine import parse_routine
from audioguide.speech import Speech

# Five sections of different lengths, so the order of work differs from the order of tracks.
ROUTINE = parse_routine(
    "title: Five Parts\nbreath: {tempo: 20}\nsections:\n"
    + "".join(
        f"  - title: Part {i}\n    steps:\n      - say: This is part {i}.\n"
        f"      - pause: {seconds}\n      - breathe: {{cycles: 2}}\n"
        for i, seconds in enumerate((3, 9, 1, 6, 4), start=1)
    ),
    source="five.yaml",
    name="five",
)


def options(**kwargs) -> SessionOptions:
    return SessionOptions(use_cache=False, **kwargs)


def render(tmp_path, fake_engine, name: str, **kwargs):
    speech = Speech(fake_engine, cache=None)
    return render_session(ROUTINE, tmp_path / name, options(**kwargs), speech=speech)


def test_parallel_render_is_byte_identical_to_one_thread(tmp_path, fake_engine):
    one = render(tmp_path, fake_engine, "one", jobs=1)
    two = render(tmp_path, fake_engine, "two", jobs=3)
    names = sorted(p.name for p in one.folder.iterdir())
    assert names == sorted(p.name for p in two.folder.iterdir())
    assert len([n for n in names if n.endswith(".mp3")]) == 6  # five tracks and the full file
    for name in names:
        assert (one.folder / name).read_bytes() == (two.folder / name).read_bytes(), name


def test_no_more_tracks_in_flight_than_jobs(tmp_path, fake_engine, monkeypatch):
    # Never more tracks in the works at once than --jobs.
    active = 0
    most = 0
    lock = threading.Lock()
    real_mixer = pipeline.TrackMixer

    def counting_mixer(*args, **kwargs):
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            time.sleep(0.02)  # long enough for another worker to start if it could
            return real_mixer(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(pipeline, "TrackMixer", counting_mixer)
    render(tmp_path, fake_engine, "out", jobs=2)
    assert most == 2


def test_a_worker_holds_a_span_of_a_track_never_the_track(tmp_path, fake_engine, monkeypatch):
    # Memory follows the span, not the session: a long track is mixed a span at a time in both
    # passes (mastering takes a little of the track either side for the limiter).
    from audioguide import mix

    ranges: list[int] = []
    real_mix = mix.TrackMixer.mix

    def recording_mix(self, lo, hi):
        ranges.append(min(hi, self.length) - max(lo, 0))
        return real_mix(self, lo, hi)

    monkeypatch.setattr(mix.TrackMixer, "mix", recording_mix)
    # Under a bed, so that pass 1 mixes the whole track too (it skips silence).
    long = parse_routine(
        "title: Long\nsounds: {ambient: pink}\nsections:\n  - title: A\n    steps: [{pause: 60}]\n"
    )
    result = render_session(long, tmp_path / "out", options(), speech=Speech(fake_engine, None))
    samples = round(result.timeline.tracks[0].duration_s * 44_100)
    assert samples > 4 * mix.SPAN_SAMPLES
    assert max(ranges) <= mix.SPAN_SAMPLES + 2 * mix.LIMITER_CONTEXT_SAMPLES
    assert sum(ranges) >= 2 * samples  # both passes covered the whole track


def test_progress_reaches_the_session_length_in_order(tmp_path, fake_engine):
    calls: list[tuple[str, float, float]] = []
    speech = Speech(fake_engine, cache=None)
    result = render_session(
        ROUTINE,
        tmp_path / "out",
        options(jobs=2),
        speech=speech,
        progress=lambda *a: calls.append(a),
    )
    stages = [stage for stage, _, _ in calls]
    assert stages == sorted(stages, key=["synthesize", "speech", "measure", "encode"].index)
    # No cache: every cue is synthesized, one report before the batch and one per cue, as
    # shares of the render's time that climb to synthesis's whole share.
    spoken = [(d, t) for s, d, t in calls if s == "synthesize"]
    share = pipeline.synthesis_share("fake", 1)(1)
    assert spoken[0] == (0, share) and spoken[-1] == pytest.approx((share, share))
    assert [d for d, _ in spoken] == sorted(d for d, _ in spoken)
    for stage in ("measure", "encode"):
        done = [d for s, d, _ in calls if s == stage]
        assert done == sorted(done)
        assert len(done) == 5
        assert done[-1] == pytest.approx(result.timeline.total_s)
        assert {t for s, _, t in calls if s == stage} == {result.timeline.total_s}


def test_synthesis_takes_the_bar_by_the_engine_and_what_is_missing():
    piper, espeak = pipeline.synthesis_share("piper:x", 100), pipeline.synthesis_share("e", 100)
    assert piper(100) == pytest.approx(pipeline.SYNTHESIS_SHARES["piper"])
    assert espeak(100) == pytest.approx(pipeline.DEFAULT_SYNTHESIS_SHARE)
    assert piper(0) == 0.0
    assert 0.0 < piper(10) < piper(50) < piper(100)
    assert espeak(50) < piper(50)


@pytest.mark.parametrize("share", [0.0, 0.15, 0.85])
def test_the_bar_is_cut_into_stages_that_fill_it_in_order(share):
    from audioguide.cli import progress_weights

    weights = progress_weights(share)
    order = ["synthesize", "speech", "measure", "encode"]
    ends = [0.0]
    for stage in order:
        start, span = weights[stage]
        assert start == pytest.approx(ends[-1]) and span >= 0.0
        ends.append(start + span)
    assert ends[-1] == pytest.approx(100.0)
    assert weights["synthesize"][1] == pytest.approx(100.0 * share)
    # What is not synthesis is shared as a warm render's time is.
    assert weights["encode"][1] == pytest.approx(0.7 * (100.0 - 100.0 * share))


def test_longest_tracks_are_started_first(tmp_path, fake_engine, monkeypatch):
    started: list[int] = []
    real_mixer = pipeline.TrackMixer

    def recording_mixer(track, *args, **kwargs):
        started.append(track.index)
        return real_mixer(track, *args, **kwargs)

    monkeypatch.setattr(pipeline, "TrackMixer", recording_mixer)
    result = render(tmp_path, fake_engine, "out", jobs=1)
    by_length = [t.index for t in sorted(result.timeline.tracks, key=lambda t: -t.duration_s)]
    assert started[:5] == by_length  # pass 1
    assert started[5:] == by_length  # pass 2


@pytest.mark.parametrize("fault", [ExportError("no room"), KeyboardInterrupt()])
def test_a_failure_drops_queued_tracks_and_leaves_no_staging(
    tmp_path, fake_engine, monkeypatch, fault
):
    started: list[int] = []
    real_master = pipeline.mastered_spans

    def failing_master(mixer, gain_db, **kwargs):
        started.append(1)
        if len(started) == 2:
            raise fault
        return real_master(mixer, gain_db, **kwargs)

    monkeypatch.setattr(pipeline, "mastered_spans", failing_master)
    with pytest.raises(type(fault)):
        render(tmp_path, fake_engine, "out", jobs=1)
    assert len(started) == 2  # the three tracks still queued were never started
    assert not (tmp_path / "out").exists()  # the staging folder, and the folder made for it


def test_write_errors_name_the_output_folder(tmp_path, fake_engine, monkeypatch):
    import errno
    import os

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipeline.SessionWriter, "write_track", no_space)
    with pytest.raises(ExportError) as raised:
        render(tmp_path, fake_engine, "out", jobs=2)
    assert str(raised.value).startswith(f"{tmp_path / 'out' / 'five'}: the disk is full;")


# ---------------------------------------------------------------------------------------------
# The progress bar: on stderr when it is a terminal, never under --quiet or into a pipe


def stderr_of(command: list[str], tty: bool) -> tuple[int, str]:
    """Run ``command`` in a fresh process with stderr on a terminal (a pty) or a pipe: its exit
    code and what it wrote there."""
    if not tty:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stderr
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=child_fd)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def render_with_stderr(tmp_path, tty: bool, *args: str) -> tuple[int, str]:
    """Run a real render in a fresh process with stderr on a terminal (a pty) or a pipe."""
    routine = tmp_path / "tiny.yaml"
    routine.write_text(TINY, encoding="utf-8")
    command = [sys.executable, "-m", "audioguide", "render", str(routine), "-o", str(tmp_path)]
    return stderr_of([*command, *args], tty)


def test_progress_bar_on_a_terminal(tmp_path):
    code, stderr = render_with_stderr(tmp_path, True)
    assert code == 0, stderr
    assert "Rendering" in stderr
    assert "100%" in stderr


@pytest.mark.parametrize(("tty", "args"), [(True, ("--quiet",)), (False, ())])
def test_no_progress_bar_when_quiet_or_piped(tmp_path, tty, args):
    code, stderr = render_with_stderr(tmp_path, tty, *args)
    assert code == 0, stderr
    assert stderr == ""


def plan_with_stderr(routine, tty: bool, *args: str) -> tuple[int, str]:
    """``audioguide plan ROUTINE`` as a user runs it, its stderr a terminal (a pty) or a pipe."""
    return stderr_of([sys.executable, "-m", "audioguide", "plan", str(routine), *args], tty)


def test_a_plan_that_synthesizes_shows_a_bar_on_a_terminal_and_only_then(tmp_path):
    """A first plan synthesizes every cue (with Piper, back-pain's take about 15 s): a bar
    follows them on a terminal. With every cue cached, or piped, nothing is shown."""
    routine = tmp_path / "tiny.yaml"
    routine.write_text(TINY, encoding="utf-8")
    code, stderr = plan_with_stderr(routine, True)
    assert code == 0, stderr
    assert "Synthesizing" in stderr and "100%" in stderr
    code, stderr = plan_with_stderr(routine, True)  # every cue in the cache now
    assert (code, stderr) == (0, "")
    (tmp_path / "other.yaml").write_text(TINY.replace("One.", "Three."), encoding="utf-8")
    code, stderr = plan_with_stderr(tmp_path / "other.yaml", False)
    assert (code, stderr) == (0, "")


class BatchCountingEngine:
    """The fake engine, speaking in batches it counts (as espeak-ng's and Piper's do)."""

    identity = "batch-counting/1"

    def __init__(self) -> None:
        from conftest import FakeEngine

        self._fake = FakeEngine()
        self.batches: list[list[str]] = []

    def synthesize(self, text: str):
        return self._fake.synthesize(text)

    def synthesize_all(self, texts: list[str]):
        self.batches.append(list(texts))
        return map(self._fake.synthesize, texts)

    def voices(self):
        return self._fake.voices()


def test_planning_many_routines_speaks_what_they_lack_in_one_batch():
    from audioguide.routine import builtin_names, load_routine

    names = builtin_names()[:4]
    routines = [load_routine(name) for name in names]
    engine = BatchCountingEngine()
    told: list[tuple[int, int]] = []
    timelines = pipeline.plan_sessions(
        routines, speech=Speech(engine, cache=None), spoken=lambda d, m: told.append((d, m))
    )
    wanted = {
        text
        for routine in routines
        for text in pipeline.speech_texts(routine, SessionOptions().render)
    }
    assert len(engine.batches) == 1 and set(engine.batches[0]) == wanted
    assert told[0] == (0, len(wanted)) and told[-1] == (len(wanted), len(wanted))
    for routine, timeline in zip(routines, timelines, strict=True):
        alone = pipeline.plan_session(routine, speech=Speech(BatchCountingEngine(), cache=None))
        assert timeline == alone

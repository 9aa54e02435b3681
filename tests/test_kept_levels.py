"""Kept levels: pass 1's measurement of a track, read back only when every input to it is the
same, and then exactly what measuring it again gives."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEngine, run_cli

from audioguide import kept_levels, pipeline
from audioguide.kept_levels import LEVELS_MEMO, LEVELS_SUFFIX, KeptLevels
from audioguide.mix import MixSettings, TrackLevels, TrackMixer, track_levels
from audioguide.speech import Speech, SpeechCache, cache_dir
from audioguide.timeline import Event, Track

TEXTS = ("Welcome. Sit comfortably.", "Breathe in slowly.", "And out.")


def levels_key(track: Track, speech: Speech, mix: MixSettings) -> str | None:
    """The key a render of this package gives ``track``'s levels."""
    code = kept_levels.code_digest()
    assert code is not None
    return kept_levels.levels_key(track, speech, mix, code)


def a_track(index: int = 0) -> Track:
    events = (
        Event("bell", 0.0, 4.0),
        Event("say", 4.0, 1.5, text=TEXTS[0]),
        Event("breath", 6.0, 4.0, phase="inhale", breaths_per_min=6.0),
        Event("say", 6.5, 1.0, text=TEXTS[1]),
        Event("breath", 10.0, 6.0, phase="exhale"),
        Event("say", 10.5, 0.9, text=TEXTS[2]),
        Event("move", 17.0, 1.0, beat=1, tick=True),
        Event("pause", 18.0, 2.0),
    )
    return Track(index, "Arrive", 0.0, 20.0, events)


@pytest.fixture
def cached_speech(tmp_path) -> Speech:
    speech = Speech(FakeEngine(), SpeechCache(tmp_path))
    for text in TEXTS:
        speech.samples(text)
    return speech


def measured(track: Track, speech: Speech, mix: MixSettings | None = None) -> TrackLevels:
    return track_levels(TrackMixer(track, speech, mix or MixSettings()))


def assert_same_levels(got: TrackLevels, want: TrackLevels) -> None:
    for name in ("powers", "spoken", "voice_peaks"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_levels_read_back_are_the_measured_ones_to_the_bit(tmp_path, cached_speech):
    want = measured(a_track(), cached_speech)
    assert want.powers.size > 100 and want.spoken.any() and want.voice_peaks.size == 3
    kept = KeptLevels(tmp_path / "levels")
    key = levels_key(a_track(), cached_speech, MixSettings())
    assert key is not None and kept.get(key) is None
    kept.put(key, want)
    assert_same_levels(kept.get(key), want)


def test_a_cue_made_again_is_a_new_key_for_the_same_words(tmp_path, cached_speech):
    """A cue is keyed by its samples: after the speech cache was cleared, the same words from
    an engine that now says them a little differently are new levels."""
    key = levels_key(a_track(), cached_speech, MixSettings())
    SpeechCache(tmp_path).clear()

    class Louder(FakeEngine):
        def synthesize(self, text):
            clip = super().synthesize(text)
            return dataclasses.replace(clip, samples=(clip.samples * 1.01).astype(np.int16))

    again = Speech(Louder(), SpeechCache(tmp_path))
    assert levels_key(a_track(), again, MixSettings()) != key
    same = Speech(FakeEngine(), SpeechCache(tmp_path))  # reads what Louder left
    assert levels_key(a_track(), same, MixSettings()) != key


def _changed_event(event: Event, field: str) -> Event:
    value = getattr(event, field)
    if field == "kind":
        return dataclasses.replace(event, kind="pause" if event.kind != "pause" else "bell")
    if isinstance(value, bool):
        return dataclasses.replace(event, **{field: not value})
    if isinstance(value, float):
        return dataclasses.replace(event, **{field: value + 0.001})
    if isinstance(value, int):
        return dataclasses.replace(event, **{field: value + 1})
    if value is None:
        return dataclasses.replace(event, **{field: "exhale" if field == "phase" else 1})
    return dataclasses.replace(event, **{field: "rest" if field == "phase" else value})


@pytest.mark.parametrize("slot", range(len(a_track().events)))
@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Event) if f.name != "text"])
def test_any_change_to_any_event_is_a_new_key(cached_speech, slot, field):
    """Every field of every event (a cue's words are its samples', keyed as such)."""
    track = a_track()
    event = track.events[slot]
    changed = _changed_event(event, field)
    assert changed != event
    events = (*track.events[:slot], changed, *track.events[slot + 1 :])
    other = dataclasses.replace(track, events=events)
    assert levels_key(other, cached_speech, MixSettings()) != levels_key(
        track, cached_speech, MixSettings()
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: dataclasses.replace(t, index=1), id="index"),
        pytest.param(lambda t: dataclasses.replace(t, start_s=1.0), id="start"),
        pytest.param(lambda t: dataclasses.replace(t, duration_s=21.0), id="duration"),
        pytest.param(lambda t: dataclasses.replace(t, ambient="pink"), id="bed"),
    ],
)
def test_any_change_to_the_track_is_a_new_key(cached_speech, change):
    track = a_track()
    assert levels_key(change(track), cached_speech, MixSettings()) != levels_key(
        track, cached_speech, MixSettings()
    )


@pytest.mark.parametrize(
    "mix",
    [
        MixSettings(breath_sound="noise"),
        MixSettings(bells=False),
        MixSettings(seed=1),
        MixSettings(ambient="brown"),
    ],
    ids=["breath-sound", "bells", "seed", "ambient"],
)
def test_any_change_to_the_mix_is_a_new_key_but_the_loudness_target(cached_speech, mix):
    track = a_track()
    plain = levels_key(track, cached_speech, MixSettings())
    assert levels_key(track, cached_speech, mix) != plain
    louder = MixSettings(loudness_lufs=-14.0)
    assert levels_key(track, cached_speech, louder) == plain  # measured before the gain


def test_a_change_to_any_module_or_built_in_sound_is_a_new_key(tmp_path, monkeypatch):
    package = tmp_path / "audioguide"
    (package / "sounds").mkdir(parents=True)
    (package / "mix.py").write_text("GAIN = 1\n")
    (package / "sounds" / "bowl.wav").write_bytes(b"RIFF....")
    monkeypatch.setattr(kept_levels, "_PACKAGE", package)
    kept_levels.code_digest.cache_clear()
    try:
        first = kept_levels.code_digest()
        (package / "mix.py").write_text("GAIN = 2\n")
        kept_levels.code_digest.cache_clear()
        second = kept_levels.code_digest()
        (package / "sounds" / "bowl.wav").write_bytes(b"RIFF...!")
        kept_levels.code_digest.cache_clear()
        third = kept_levels.code_digest()
        (package / "export").mkdir()
        (package / "export" / "tags.py").write_text("")
        kept_levels.code_digest.cache_clear()
        fourth = kept_levels.code_digest()
    finally:
        kept_levels.code_digest.cache_clear()
    assert len({first, second, third, fourth}) == 4


def test_a_track_that_reads_a_sound_file_of_the_users_is_not_kept(tmp_path, cached_speech):
    bell = tmp_path / "my-bell.wav"
    shutil.copy(Path(kept_levels.__file__).parent / "sounds" / "bowl-small.wav", bell)
    track = a_track()
    plain = MixSettings()
    assert levels_key(track, cached_speech, MixSettings(bell_file=str(bell))) is None
    assert levels_key(track, cached_speech, MixSettings(ambient=str(bell))) is None
    for mine in (
        dataclasses.replace(track, bell_sound=str(bell)),
        dataclasses.replace(track, ambient=str(bell)),
    ):
        assert levels_key(mine, cached_speech, plain) is None
    # With the bells off, the bell file is not read.
    no_bells = MixSettings(bells=False, bell_file=str(bell))
    assert levels_key(track, cached_speech, no_bells) is not None


def test_a_cue_not_cached_keeps_no_levels(fake_speech):
    assert levels_key(a_track(), fake_speech, MixSettings()) is None


def _damages(raw: bytes) -> list[bytes]:
    header = 4 + 8 + 8
    return [
        raw[: len(raw) // 2],
        b"",
        b"\0" * len(raw),
        raw[:-1] + bytes([raw[-1] ^ 1]),
        raw[: header + 32] + bytes(len(raw) - header - 32),
        b"XXXX" + raw[4:],
        raw[:10],
        raw + b"\0",
    ]


def test_a_damaged_or_foreign_entry_reads_as_a_miss(tmp_path, cached_speech):
    kept = KeptLevels(tmp_path / "levels")
    key = levels_key(a_track(), cached_speech, MixSettings())
    other = levels_key(a_track(1), cached_speech, MixSettings())
    kept.put(key, measured(a_track(), cached_speech))
    kept.put(other, measured(a_track(1), cached_speech))
    path = tmp_path / "levels" / f"{key}{LEVELS_SUFFIX}"
    good = path.read_bytes()
    for damaged in _damages(good):
        path.write_bytes(damaged)
        assert kept.get(key) is None
    # Another key's entry, under this key's name.
    path.write_bytes((tmp_path / "levels" / f"{other}{LEVELS_SUFFIX}").read_bytes())
    assert kept.get(key) is None
    path.write_bytes(good)
    assert kept.get(key) is not None


# -- through the CLI, with the real voice and encoder ------------------------------------------


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """The tracks pass 1 measures, by index, as renders in this process ask."""
    tracks: list[int] = []
    measure = pipeline.track_levels

    def counting(mixer):
        tracks.append(mixer.track.index)
        return measure(mixer)

    monkeypatch.setattr(pipeline, "track_levels", counting)
    return tracks


def _render(routine: Path, out: Path, *args: str) -> dict[str, bytes]:
    code, output = run_cli(["render", str(routine), "-o", str(out), "--force", *args])
    assert code == 0, output
    return {p.name: p.read_bytes() for p in sorted((out / routine.stem).glob("*.mp3"))}


def test_a_render_from_kept_levels_writes_the_bytes_measuring_writes(
    tmp_path, short_routine_file, counted
):
    routine = short_routine_file
    first = _render(routine, tmp_path / "a")
    assert sorted(counted) == [1, 2]
    memo = cache_dir() / LEVELS_MEMO
    assert len(list(memo.glob(f"*{LEVELS_SUFFIX}"))) == 2

    counted.clear()
    again = _render(routine, tmp_path / "b")
    assert counted == []  # nothing measured
    assert again == first and len(first) == 3  # two tracks and the full session

    # A louder target is the same measurement, mastered louder.
    louder = _render(routine, tmp_path / "e", "--loudness", "-14")
    assert counted == [] and louder != first

    # At another tempo the breathing track is measured again; the other is the same track.
    counted.clear()
    slower = _render(routine, tmp_path / "c", "--breath-tempo", "5")
    assert counted == [2]
    shutil.rmtree(memo)
    counted.clear()
    assert _render(routine, tmp_path / "d", "--breath-tempo", "5") == slower
    assert sorted(counted) == [1, 2]


def test_a_render_without_the_cache_neither_reads_nor_keeps_levels(
    tmp_path, short_routine_file, counted
):
    routine = short_routine_file
    _render(routine, tmp_path / "a")
    counted.clear()
    _render(routine, tmp_path / "b", "--no-cache")
    assert sorted(counted) == [1, 2]
    shutil.rmtree(cache_dir())
    _render(routine, tmp_path / "c", "--no-cache")
    assert not (cache_dir() / LEVELS_MEMO).exists()


def test_a_track_titled_in_any_characters_has_a_key(cached_speech):
    for title in ("Ocean Breath 🌊", "Atem \udcff", "呼吸"):
        track = dataclasses.replace(a_track(), title=title)
        assert levels_key(track, cached_speech, MixSettings()) is not None

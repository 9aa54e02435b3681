"""The speech cache: keys, round trips, damaged entries, two renders at once, the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest
from click.testing import CliRunner

from audioguide.cli import cli
from audioguide.routine import load_routine
from audioguide.speech import CACHE_ENV, Speech, SpeechCache, SpeechClip, cache_dir
from audioguide.speech.espeak import Pyttsx3Engine
from audioguide.timeline import speech_texts


def clip(n: int = 2205, rate: int = 22_050, seed: int = 0) -> SpeechClip:
    rng = np.random.default_rng(seed)
    return SpeechClip(rng.integers(-20000, 20000, n).astype(np.int16), rate)


def test_round_trip_keeps_every_sample_and_the_rate(tmp_path):
    cache = SpeechCache(tmp_path)
    original = clip(n=12_345, rate=16_000)
    cache.put("engine/1", "Breathe in.", original)
    got = cache.get("engine/1", "Breathe in.")
    assert got is not None
    assert got.sample_rate == 16_000
    assert got.samples.dtype == np.int16
    np.testing.assert_array_equal(got.samples, original.samples)


def test_key_changes_with_text_and_each_part_of_the_engine_identity(tmp_path):
    cache = SpeechCache(tmp_path)
    base = cache.key("pyttsx3 2.99/linux/espeak-ng 1.52.0/gmw/en-us/140wpm/p42", "In.")
    assert base == cache.key("pyttsx3 2.99/linux/espeak-ng 1.52.0/gmw/en-us/140wpm/p42", "In.")
    variants = [
        ("pyttsx3 2.99/linux/espeak-ng 1.52.0/gmw/en-us/140wpm/p42", "In"),
        ("pyttsx3 2.98/linux/espeak-ng 1.52.0/gmw/en-us/140wpm/p42", "In."),
        ("pyttsx3 2.99/linux/espeak-ng 1.51.1/gmw/en-us/140wpm/p42", "In."),
        ("pyttsx3 2.99/linux/espeak-ng 1.52.0/gmw/en-gb/140wpm/p42", "In."),
        ("pyttsx3 2.99/linux/espeak-ng 1.52.0/gmw/en-us/120wpm/p42", "In."),
        ("pyttsx3 2.99/linux/espeak-ng 1.52.0/gmw/en-us/140wpm/p50", "In."),
    ]
    keys = {cache.key(identity, text) for identity, text in variants}
    assert base not in keys
    assert len(keys) == len(variants)
    # The separator keeps ("a", "b c") and ("a b", "c") apart.
    assert cache.key("a", "b c") != cache.key("a b", "c")


def test_real_engine_identity_names_versions_voice_and_rate():
    identity = Pyttsx3Engine(rate_wpm=120).identity
    assert metadata.version("pyttsx3") in identity
    assert "espeak-ng" in identity
    assert "120wpm" in identity
    assert identity != Pyttsx3Engine(rate_wpm=121).identity
    assert identity != Pyttsx3Engine(voice="gmw/en-gb-x-rp", rate_wpm=120).identity


def test_a_second_render_synthesizes_nothing(tmp_path, fake_engine):
    texts = ["Welcome.", "Breathe in.", "And out."]
    first = Speech(fake_engine, SpeechCache(tmp_path))
    lengths = [first.length_s(t) for t in texts]
    assert fake_engine.calls == texts
    fake_engine.calls.clear()
    second = Speech(fake_engine, SpeechCache(tmp_path))
    assert [second.length_s(t) for t in texts] == lengths
    assert fake_engine.calls == []
    for text in texts:
        np.testing.assert_array_equal(second.dry(text), first.dry(text))


def test_without_a_cache_the_engine_is_asked_every_time(tmp_path, fake_engine):
    Speech(fake_engine, None).dry("Welcome.")
    Speech(fake_engine, None).dry("Welcome.")
    assert fake_engine.calls == ["Welcome.", "Welcome."]


def entry_path(cache: SpeechCache, identity: str, text: str):
    paths = list(cache.root.rglob(f"{cache.key(identity, text)}.wav"))
    assert len(paths) == 1
    return paths[0]


# Damage any cache entry can suffer; each kind of entry adds its own.
DAMAGE = [
    pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
    pytest.param(lambda raw: b"", id="empty"),
    pytest.param(lambda raw: b"\0" * len(raw), id="zeroed"),
]


@pytest.mark.parametrize(
    "damage",
    [
        *DAMAGE,
        pytest.param(lambda raw: raw[:30], id="header-cut"),
        pytest.param(lambda raw: b"not a wav file at all" * 40, id="garbage"),
        pytest.param(lambda raw: raw[:22] + b"\x02" + raw[23:], id="stereo-header"),
    ],
)
def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path, fake_engine, damage):
    cache = SpeechCache(tmp_path)
    Speech(fake_engine, cache).dry("Welcome home.")
    path = entry_path(cache, fake_engine.identity, "Welcome home.")
    good = path.read_bytes()
    path.write_bytes(damage(good))
    assert cache.get(fake_engine.identity, "Welcome home.") is None

    fake_engine.calls.clear()
    speech = Speech(fake_engine, cache)
    assert speech.length_s("Welcome home.") > 0.5
    assert fake_engine.calls == ["Welcome home."]  # synthesized again...
    assert path.read_bytes() == good  # ...and the entry replaced with a whole one
    assert cache.get(fake_engine.identity, "Welcome home.") is not None


def test_an_unwritable_cache_only_costs_speed(tmp_path, fake_engine):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    speech = Speech(fake_engine, SpeechCache(blocker))
    assert speech.length_s("Still spoken.") > 0.5


# Two processes write different audio under the same key (espeak's output varies a little
# between runs) and read it back at once. Every read must be a whole clip one of them wrote:
# never half of one, never a mix of both.
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from audioguide.speech import SpeechCache, SpeechClip

    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    clips = [
        SpeechClip(np.full(40_000 + 7 * s, 1000 * (s + 1), dtype=np.int16), 22_050)
        for s in range(2)
    ]
    valid = {c.samples.size: int(c.samples[0]) for c in clips}
    cache = SpeechCache(root)
    bad = hits = 0
    for i in range(300):
        cache.put("engine/1", "Shared cue.", clips[seed])
        got = cache.get("engine/1", "Shared cue.")
        if got is None:
            bad += 1
            continue
        hits += 1
        whole = got.samples.size in valid and np.all(got.samples == valid[got.samples.size])
        bad += not whole
    print(f"{hits} {bad}")
    """
)


def test_two_processes_sharing_the_cache_never_read_a_partial_entry(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), str(seed)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        hits, bad = map(int, out.split())
        assert (hits, bad) == (300, 0)
    assert list(tmp_path.rglob("*.tmp")) == []
    assert len(list(tmp_path.rglob("*.wav"))) == 1


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir() == tmp_path / "xdg" / "audioguide"
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert cache_dir() == tmp_path / "home" / ".cache" / "audioguide"


def test_cli_no_cache_writes_nothing_and_cache_clear_empties_it(short_routine_file):
    root = cache_dir()
    runner = CliRunner()
    result = runner.invoke(cli, ["plan", str(short_routine_file), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert not list(root.rglob("*.wav"))

    result = runner.invoke(cli, ["plan", str(short_routine_file)])
    assert result.exit_code == 0, result.output
    cues = len(speech_texts(load_routine(str(short_routine_file))))
    assert len(list(root.rglob("*.wav"))) == cues

    result = runner.invoke(cli, ["cache", "info"])
    assert result.output.startswith(f"{root}: {cues} cached cues")
    result = runner.invoke(cli, ["cache", "clear"])
    assert result.exit_code == 0
    assert result.output.startswith(f"Removed {cues} cached cues (")
    assert not list(root.rglob("*.wav"))


# -- prepared cues: as mixed, through the voice chain -----------------------------------------


def prepared_files(cache: SpeechCache) -> list:
    return sorted(cache.root.rglob("*.cue"))


def test_a_second_render_prepares_nothing(tmp_path, fake_engine, monkeypatch):
    from audioguide.speech import cues as speech_module
    from audioguide.speech import warm_voice

    texts = ["Welcome.", "Breathe in.", "And out."]
    first = Speech(fake_engine, SpeechCache(tmp_path), effect=warm_voice)
    wet = [first.samples(t) for t in texts]
    lengths = [first.length_s(t) for t in texts]
    assert len(prepared_files(first.cache)) == len(texts)

    def not_again(clip):
        raise AssertionError("prepared again")

    monkeypatch.setattr(speech_module, "prepare_clip", not_again)
    fake_engine.calls.clear()
    second = Speech(fake_engine, SpeechCache(tmp_path), effect=warm_voice)
    for text, samples in zip(texts, wet, strict=True):
        np.testing.assert_array_equal(second.samples(text), samples)
    assert [second.length_s(t) for t in texts] == lengths  # the dry length travels with it
    assert fake_engine.calls == []


def test_each_voice_chain_has_its_own_prepared_cues(tmp_path, fake_engine):
    from audioguide.speech import warm_voice

    cache = SpeechCache(tmp_path)
    warm = Speech(fake_engine, cache, effect=warm_voice).samples("Welcome.")
    dry = Speech(fake_engine, cache, effect=None).samples("Welcome.")
    assert len(prepared_files(cache)) == 2
    assert warm.size > dry.size  # the room's tail
    np.testing.assert_array_equal(Speech(fake_engine, cache).samples("Welcome."), dry)
    # An effect whose code the cache cannot see is never cached.
    Speech(fake_engine, cache, effect=lambda x: x * 0.5).samples("Welcome.")
    assert len(prepared_files(cache)) == 2
    files, size = cache.stats()
    assert files == 1  # one cue, kept as the engine's clip and two prepared versions
    assert size == sum(p.stat().st_size for p in cache.root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "damage",
    [
        *DAMAGE,
        pytest.param(lambda raw: raw[:10], id="header-cut"),
        pytest.param(lambda raw: b"XXXX" + raw[4:], id="wrong-magic"),
        pytest.param(lambda raw: raw[:8] + b"\xff" * 8 + raw[16:], id="dry-longer-than-cue"),
    ],
)
def test_a_damaged_prepared_cue_is_prepared_again(tmp_path, fake_engine, damage):
    cache = SpeechCache(tmp_path)
    good_samples = Speech(fake_engine, cache).samples("Welcome home.")
    (path,) = prepared_files(cache)
    good = path.read_bytes()
    path.write_bytes(damage(good))
    again = Speech(fake_engine, cache)
    np.testing.assert_array_equal(again.samples("Welcome home."), good_samples)
    assert path.read_bytes() == good

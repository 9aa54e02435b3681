"""The speech cache: keys, round trips, damaged entries, two renders at once, the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHORT_ROUTINE

from audioguide.cli import cli
from audioguide.export.cover import MEMO_SUFFIX
from audioguide.kept_levels import LEVELS_MEMO, LEVELS_SUFFIX
from audioguide.pipeline import COVER_MEMO
from audioguide.routine import load_routine
from audioguide.speech import CACHE_ENV, Speech, SpeechCache, SpeechClip, cache_dir
from audioguide.speech.espeak import INFO_FILE, Pyttsx3Engine
from audioguide.speech.piper import DIGESTS_FILE, MODEL_SUFFIX, MODELS_FOLDER
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
    paths = list(cache.root.rglob(f"{cache.key(identity, text)}.clip"))
    assert len(paths) == 1
    return paths[0]


HEADER_BYTES = {"clip": 16 + 32, "cue": 24 + 32}  # fields, then the checksum


def zero_body(raw: bytes, kind: str) -> bytes:
    """A power cut's damage: the header as it was, every sample zero, the right length."""
    return raw[: HEADER_BYTES[kind]] + b"\0" * (len(raw) - HEADER_BYTES[kind])


def random_body(raw: bytes, kind: str) -> bytes:
    noise = np.random.default_rng(5).integers(0, 256, len(raw) - HEADER_BYTES[kind])
    return raw[: HEADER_BYTES[kind]] + noise.astype(np.uint8).tobytes()


def one_sample_off(raw: bytes, kind: str) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


# Damage any cache entry can suffer, as (raw, kind) -> raw; each kind of entry adds its own.
DAMAGE = [
    pytest.param(lambda raw, kind: raw[: len(raw) // 2], id="truncated"),
    pytest.param(lambda raw, kind: b"", id="empty"),
    pytest.param(lambda raw, kind: b"\0" * len(raw), id="zeroed"),
    pytest.param(zero_body, id="zeroed-body"),
    pytest.param(random_body, id="random-body"),
    pytest.param(one_sample_off, id="one-sample-off"),
    pytest.param(lambda raw, kind: raw[:10], id="header-cut"),
    pytest.param(lambda raw, kind: b"XXXX" + raw[4:], id="wrong-magic"),
]


@pytest.mark.parametrize(
    "damage",
    [
        *DAMAGE,
        pytest.param(lambda raw, kind: b"not a cache entry at all" * 40, id="garbage"),
        pytest.param(lambda raw, kind: raw[:4] + b"\x01" + raw[5:], id="rate-changed"),
    ],
)
def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path, fake_engine, damage):
    cache = SpeechCache(tmp_path)
    Speech(fake_engine, cache).dry("Welcome home.")
    path = entry_path(cache, fake_engine.identity, "Welcome home.")
    good = path.read_bytes()
    path.write_bytes(damage(good, "clip"))
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
    assert len(list(tmp_path.rglob("*.clip"))) == 1


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
    assert not list(root.rglob("*.clip"))

    result = runner.invoke(cli, ["plan", str(short_routine_file)])
    assert result.exit_code == 0, result.output
    cues = len(speech_texts(load_routine(str(short_routine_file))))
    assert len(list(root.rglob("*.clip"))) == cues

    result = runner.invoke(cli, ["cache", "info"])
    assert result.output.startswith(f"{root}: {cues} cached cues")
    result = runner.invoke(cli, ["cache", "clear"])
    assert result.exit_code == 0
    assert result.output.startswith(f"Removed {cues} cached cues (")
    assert not list(root.rglob("*.clip"))


def test_cache_clear_also_removes_the_covers_and_what_was_noted_about_the_voices(
    short_routine_file, tmp_path
):
    """Everything a render keeps in the cache folder besides the cues (each cover drawn, each
    track's measured levels, what espeak-ng said of its voices, Piper models' digests) goes
    too; a file of the user's that happens to be there stays."""
    root = cache_dir()
    runner = CliRunner()
    result = runner.invoke(cli, ["render", str(short_routine_file), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    covers = root / COVER_MEMO
    assert list(covers.glob(f"*{MEMO_SUFFIX}"))
    levels = root / LEVELS_MEMO
    assert len(list(levels.glob(f"*{LEVELS_SUFFIX}"))) == 2  # one per track
    (levels / "tmpq9w8.tmp").write_bytes(b"half")
    (root / DIGESTS_FILE).write_text("{}", encoding="utf-8")
    (root / INFO_FILE).write_text("{}", encoding="utf-8")
    (covers / "left-by-a-killed-render.tmp").write_bytes(b"half")
    models = root / MODELS_FOLDER  # Piper's model as onnxruntime optimized it here
    models.mkdir()
    (models / f"58afce0321b8d9c46d7c-conv2d-ort1.0-abc{MODEL_SUFFIX}").write_bytes(b"graph")
    (models / "tmpx1y2.tmp").write_bytes(b"half a graph")
    mine = [root / "notes.txt", covers / "my-picture.png", models / "my-notes.txt"]
    mine.append(levels / "my-levels.txt")
    for path in mine:
        path.write_text("mine", encoding="utf-8")

    result = runner.invoke(cli, ["cache", "clear"])
    assert result.exit_code == 0, result.output
    # A cover, two tracks' levels, three temporaries, two memos, a model.
    assert "and 9 other cached files" in result.output
    left = sorted(p for p in root.rglob("*") if p.is_file())
    assert left == sorted(mine)


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

    def not_again(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(speech_module, "_prepared", not_again)
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
    Speech(fake_engine, cache, effect=lambda x, rate: x * 0.5).samples("Welcome.")
    assert len(prepared_files(cache)) == 2
    files, size = cache.stats()
    assert files == 1  # one cue, kept as the engine's clip and two prepared versions
    assert size == sum(p.stat().st_size for p in cache.root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "damage",
    [
        *DAMAGE,
        pytest.param(lambda raw, kind: raw[:8] + b"\xff" * 8 + raw[16:], id="dry-longer-than-cue"),
    ],
)
def test_a_damaged_prepared_cue_is_prepared_again(tmp_path, fake_engine, damage):
    cache = SpeechCache(tmp_path)
    good_samples = Speech(fake_engine, cache).samples("Welcome home.")
    (path,) = prepared_files(cache)
    good = path.read_bytes()
    path.write_bytes(damage(good, "cue"))
    again = Speech(fake_engine, cache)
    np.testing.assert_array_equal(again.samples("Welcome home."), good_samples)
    assert path.read_bytes() == good


def test_cues_read_at_once_keep_their_order_and_damaged_ones_are_missing(tmp_path, fake_engine):
    """The cache is read on several threads: every entry still goes to its own cue, and the
    damaged ones are synthesized again in one batch, in the order given."""
    from audioguide.speech import warm_voice
    from audioguide.speech.cues import _preparation_key

    def prepared_entry_path(cache: SpeechCache, identity: str, text: str):
        key = cache.key(identity, text, _preparation_key(warm_voice))
        (path,) = cache.root.rglob(f"{key}.cue")
        return path

    texts = [f"Cue number {i} " + "word " * (i % 5) for i in range(30)]
    first = Speech(fake_engine, SpeechCache(tmp_path), effect=warm_voice)
    first.synthesize_missing(texts)
    wet = {text: first.samples(text) for text in texts}
    cache = SpeechCache(tmp_path)
    damaged = [texts[i] for i in (3, 4, 17, 29)]
    for text in damaged:  # the prepared cue and its clip: synthesized again
        for path in (
            entry_path(cache, fake_engine.identity, text),
            prepared_entry_path(cache, fake_engine.identity, text),
        ):
            path.write_bytes(one_sample_off(path.read_bytes(), "cue"))
    fake_engine.calls.clear()
    second = Speech(fake_engine, cache, effect=warm_voice)
    second.synthesize_missing(list(reversed(texts)) + texts)
    assert fake_engine.calls == list(reversed(damaged))
    for text in texts:
        np.testing.assert_array_equal(second.samples(text), wet[text])
        assert second.samples(text).dtype == np.float32


def test_entries_swapped_between_two_keys_are_never_used(tmp_path, fake_engine):
    cache = SpeechCache(tmp_path)
    texts = ["Welcome home.", "Breathe out slowly now."]
    speech = Speech(fake_engine, cache)
    first = {t: speech.samples(t) for t in texts}
    clips = [entry_path(cache, fake_engine.identity, t) for t in texts]
    cues = prepared_files(cache)
    assert len(cues) == 2
    for a, b in (clips, cues):
        raw_a, raw_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(raw_b)
        b.write_bytes(raw_a)
    assert all(cache.get(fake_engine.identity, t) is None for t in texts)
    fake_engine.calls.clear()
    again = Speech(fake_engine, cache)
    for text in texts:
        np.testing.assert_array_equal(again.samples(text), first[text])
    assert sorted(fake_engine.calls) == sorted(texts)  # synthesized again, not swapped
    assert all(cache.get(fake_engine.identity, t) is not None for t in texts)  # rewritten


# -- a damaged cache through a real render -----------------------------------------------------


def decoded_tracks(folder) -> dict[str, np.ndarray]:
    import soundfile

    return {
        p.name: soundfile.read(str(p), dtype="float32")[0]
        for p in sorted(folder.glob("*.mp3"))
        if "(full)" not in p.name
    }


@pytest.fixture(scope="module")
def rendered_once(tmp_path_factory):
    """A real render of the short routine and the warm cache it left."""
    root = tmp_path_factory.mktemp("damaged")
    routine = root / "short.yaml"
    routine.write_text(SHORT_ROUTINE, encoding="utf-8")
    cache = root / "cache"
    run_render(routine, cache, root / "first")
    return routine, cache, decoded_tracks(root / "first" / "short")


def run_render(routine, cache, out) -> None:
    env = {**__import__("os").environ, CACHE_ENV: str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "audioguide", "render", str(routine), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def swap_pairs(paths: list, kind: str) -> None:
    for a, b in zip(paths[0::2], paths[1::2], strict=False):
        raw_a, raw_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(raw_b)
        b.write_bytes(raw_a)


@pytest.mark.parametrize("damage", ["zeroed-body", "random-body", "swapped"])
def test_a_render_with_a_damaged_cache_speaks_the_right_words(rendered_once, tmp_path, damage):
    import shutil

    routine, warm, expected = rendered_once
    cache = tmp_path / "cache"
    shutil.copytree(warm, cache)
    for kind, suffix in (("clip", ".clip"), ("cue", ".cue")):
        paths = sorted((cache / "speech").rglob(f"*{suffix}"))
        assert len(paths) >= 2
        if damage == "swapped":
            swap_pairs(paths, kind)
        else:
            hurt = zero_body if damage == "zeroed-body" else random_body
            for path in paths:
                path.write_bytes(hurt(path.read_bytes(), kind))
    damaged = {p: p.read_bytes() for p in (cache / "speech").rglob("*") if p.is_file()}

    run_render(routine, cache, tmp_path / "out")

    got = decoded_tracks(tmp_path / "out" / "short")
    assert len(expected) == 2  # both sections' tracks
    assert got.keys() == expected.keys()
    for name, samples in got.items():
        reference = expected[name]
        assert samples.shape == reference.shape, name
        # Speech is there and is the same speech: the first render's audio, sample for sample
        # within what MP3 rounding leaves (silent, noisy or swapped cues are far from it).
        assert np.max(np.abs(samples)) > 0.1, name
        assert np.max(np.abs(samples - reference)) < 1e-3, name
    for path, before in damaged.items():  # every damaged entry was rewritten whole
        assert path.read_bytes() != before


def test_cache_clear_empties_a_symlinked_cache_folder(tmp_path, monkeypatch, fake_engine):
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "cache-link"
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.setenv(CACHE_ENV, str(link))
    Speech(fake_engine, SpeechCache()).samples("Welcome home.")
    assert list(real.rglob("*.clip"))

    result = CliRunner().invoke(cli, ["cache", "clear"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Removed 1 cached cues (")
    assert [p for p in real.rglob("*") if p.is_file()] == []
    assert link.is_symlink() and link.is_dir()  # the link still leads where it did
    assert CliRunner().invoke(cli, ["cache", "info"]).output.startswith(f"{link}: 0 cached cues")


def test_cache_clear_empties_a_speech_folder_that_is_a_symlink(tmp_path, monkeypatch, fake_engine):
    real = tmp_path / "other-disk"
    real.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "speech").symlink_to(real, target_is_directory=True)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    Speech(fake_engine, SpeechCache()).samples("Welcome home.")
    assert list(real.rglob("*.cue"))

    result = CliRunner().invoke(cli, ["cache", "clear"])
    assert result.output.startswith("Removed 1 cached cues (")
    assert [p for p in real.rglob("*") if p.is_file()] == []
    assert (tmp_path / "cache" / "speech").is_symlink()

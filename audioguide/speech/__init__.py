"""The speech stage: cue text in, speech samples at the session rate out.

``engine`` defines what a speech engine is and picks one by name (``make_engine``); each
engine is a module of its own (``espeak``). ``cache`` keeps synthesized and prepared cues on
disk, ``cues`` prepares them for mixing (``Speech``), and ``voice_fx`` colours them.
"""

from ..audio import resample
from .cache import CACHE_ENV, PreparedCue, SpeechCache, cache_dir
from .cues import Speech, prepare_clip, prepared_length
from .engine import (
    DEFAULT_ENGINE,
    DEFAULT_RATE_WPM,
    MAX_RATE_WPM,
    MIN_RATE_WPM,
    SpeechClip,
    SpeechEngine,
    VoiceInfo,
    all_voices,
    check_pronounceable,
    engine_names,
    make_engine,
    register_engine,
    resolve_voice,
)
from .voice_fx import DEFAULT_VOICE_FX, VOICE_FX, voice_effect, warm_voice

__all__ = [
    "CACHE_ENV",
    "DEFAULT_ENGINE",
    "DEFAULT_RATE_WPM",
    "DEFAULT_VOICE_FX",
    "MAX_RATE_WPM",
    "MIN_RATE_WPM",
    "VOICE_FX",
    "PreparedCue",
    "Speech",
    "SpeechCache",
    "SpeechClip",
    "SpeechEngine",
    "VoiceInfo",
    "all_voices",
    "cache_dir",
    "check_pronounceable",
    "engine_names",
    "make_engine",
    "prepare_clip",
    "prepared_length",
    "register_engine",
    "resample",
    "resolve_voice",
    "voice_effect",
    "warm_voice",
]

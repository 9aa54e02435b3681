"""audioguide: routine scripts in, narrated guided-practice audio out.

Speech cues, breath guide tones, bells and pauses at the tempo you breathe, exported as MP3
tracks and a playlist for a phone. The public API::

    from audioguide import load_routine, plan_session, render_session, SessionOptions
    timeline = plan_session("back-pain", SessionOptions(breaths_per_min=5))
    render_session("back-pain", "audioguide-out", SessionOptions(breaths_per_min=5))
"""

from .breath import PRESETS, BreathPattern, parse_pattern
from .errors import (
    AudioguideError,
    ExportError,
    OptionError,
    RoutineError,
    SoundFileError,
    SpeechError,
)
from .pipeline import RenderResult, SessionOptions, plan_session, render_session
from .routine import Routine, builtin_names, load_routine, parse_routine
from .timeline import Event, RenderOptions, Timeline, Track, build_timeline

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AudioguideError",
    "BreathPattern",
    "Event",
    "ExportError",
    "OptionError",
    "RenderOptions",
    "RenderResult",
    "Routine",
    "RoutineError",
    "SessionOptions",
    "SoundFileError",
    "SpeechError",
    "Timeline",
    "Track",
    "__version__",
    "build_timeline",
    "builtin_names",
    "load_routine",
    "parse_pattern",
    "parse_routine",
    "plan_session",
    "render_session",
]

"""audioguide: routine scripts in, narrated guided-practice audio out.

Speech cues, breath guide tones, bells and pauses at the tempo you breathe, exported as MP3
tracks and a playlist for a phone. The public API::

    from audioguide import RenderOptions, SessionOptions, plan_session, render_session
    options = SessionOptions(render=RenderOptions(breaths_per_min=5))
    timeline = plan_session("back-pain", options)
    render_session("back-pain", "audioguide-out", options)

Every options object checks its fields when it is made and raises OptionError naming the
field, so a bad value fails where it is given.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    AudioguideError,
    ExportError,
    OptionError,
    RoutineError,
    SoundFileError,
    SpeechError,
)

if TYPE_CHECKING:
    from .breath import PRESETS, BreathPattern, parse_pattern
    from .export import ExportOptions
    from .mix import MixSettings
    from .pipeline import RenderResult, SessionOptions, VoiceOptions, plan_session, render_session
    from .programme import (
        Programme,
        ProgrammePlan,
        load_programme,
        plan_programme,
        render_programme,
    )
    from .routine import Routine, builtin_names, load_routine, parse_routine
    from .timeline import Event, RenderOptions, Timeline, Track, build_timeline

# Imported when first used, so that ``import audioguide`` (which the command does before it
# can handle Ctrl-C) does not import numpy and the rest.
_LAZY = {
    **dict.fromkeys(("PRESETS", "BreathPattern", "parse_pattern"), "breath"),
    "ExportOptions": "export",
    "MixSettings": "mix",
    **dict.fromkeys(
        ("RenderResult", "SessionOptions", "VoiceOptions", "plan_session", "render_session"),
        "pipeline",
    ),
    **dict.fromkeys(
        ("Programme", "ProgrammePlan", "load_programme", "plan_programme", "render_programme"),
        "programme",
    ),
    **dict.fromkeys(("Routine", "builtin_names", "load_routine", "parse_routine"), "routine"),
    **dict.fromkeys(("Event", "RenderOptions", "Timeline", "Track", "build_timeline"), "timeline"),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AudioguideError",
    "BreathPattern",
    "Event",
    "ExportError",
    "ExportOptions",
    "MixSettings",
    "OptionError",
    "Programme",
    "ProgrammePlan",
    "RenderOptions",
    "RenderResult",
    "Routine",
    "RoutineError",
    "SessionOptions",
    "SoundFileError",
    "SpeechError",
    "Timeline",
    "Track",
    "VoiceOptions",
    "__version__",
    "build_timeline",
    "builtin_names",
    "load_programme",
    "load_routine",
    "parse_pattern",
    "parse_routine",
    "plan_programme",
    "plan_session",
    "render_programme",
    "render_session",
]

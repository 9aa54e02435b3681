"""Breath patterns and presets: parsing, scaling to a tempo, holds."""

from __future__ import annotations

import pytest

from audioguide.breath import (
    MAX_CYCLE_S,
    MIN_CYCLE_S,
    PRESETS,
    BreathPattern,
    check_breaths_per_min,
    check_cycle_s,
    parse_pattern,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4-6", BreathPattern(4, 0, 6, 0)),
        ("4-7-8", BreathPattern(4, 7, 8, 0)),
        ("4-4-4-4", BreathPattern(4, 4, 4, 4)),
        ("4:2:6:0", BreathPattern(4, 2, 6, 0)),
        ("5.5-5.5", BreathPattern(5.5, 0, 5.5, 0)),
        (" Coherent ", BreathPattern(5, 0, 5, 0)),
    ],
)
def test_patterns_parse(text, expected):
    assert parse_pattern(text) == expected


@pytest.mark.parametrize("text", ["", "4", "4-", "a-b", "4-6-8-2-1", "-4-6", "fast"])
def test_bad_patterns_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="inhale-exhale"):
        parse_pattern(text)


@pytest.mark.parametrize("text", ["0-6", "4-0"])
def test_inhale_and_exhale_must_be_longer_than_zero(text):
    with pytest.raises(ValueError, match="longer than 0"):
        parse_pattern(text)


def test_presets_named_by_the_issue_exist_with_their_shapes():
    assert PRESETS["resonance"].pattern == BreathPattern(4, 0, 6, 0)
    assert PRESETS["resonance"].breaths_per_min == 6.0
    assert PRESETS["coherent"].pattern == BreathPattern(5, 0, 5, 0)
    assert PRESETS["box"].pattern == BreathPattern(4, 4, 4, 4)
    assert PRESETS["4-7-8"].pattern == BreathPattern(4, 7, 8, 0)
    assert "4 cycles" in PRESETS["4-7-8"].description
    sigh = PRESETS["sigh"].pattern
    assert sigh.exhale > sigh.inhale  # a long exhale after the double inhale


def test_the_sigh_is_a_double_inhale_not_a_hold():
    sigh = PRESETS["sigh"].pattern
    assert sigh.parts() == (("inhale", 3), ("top-up", 1), ("exhale", 6))
    assert not sigh.has_holds  # no hold caution, and kept at the gentle level
    assert sigh.without_holds() == sigh
    scaled = sigh.scaled_to(12.0).parts()
    assert [name for name, _ in scaled] == ["inhale", "top-up", "exhale"]
    assert [s for _, s in scaled] == pytest.approx([3.6, 1.2, 7.2])
    assert str(sigh) == "3+1-6-0"
    # Written as numbers, the same shape is a hold.
    assert parse_pattern("3-1-6").parts()[1] == ("hold", 1)
    assert parse_pattern("3-1-6").has_holds


def test_a_preset_name_wins_over_the_number_syntax():
    # "4-7-8" is both a preset and a valid pattern; they must agree.
    assert parse_pattern("4-7-8") == PRESETS["4-7-8"].pattern


def test_scaling_keeps_the_ratio_and_reaches_the_cycle():
    scaled = BreathPattern(4, 0, 6, 0).scaled_to(12.0)
    assert scaled.cycle == pytest.approx(12.0)
    assert scaled.inhale / scaled.exhale == pytest.approx(4 / 6)
    assert (scaled.inhale, scaled.exhale) == pytest.approx((4.8, 7.2))


def test_without_holds_drops_only_the_holds():
    pattern = BreathPattern(4, 7, 8, 2)
    assert pattern.has_holds
    bare = pattern.without_holds()
    assert bare == BreathPattern(4, 0, 8, 0)
    assert not bare.has_holds
    assert [p for p, _ in bare.parts()] == ["inhale", "exhale"]


def test_parts_skip_zero_phases_in_breathing_order():
    assert BreathPattern(4, 4, 4, 4).parts() == (
        ("inhale", 4),
        ("hold", 4),
        ("exhale", 4),
        ("rest", 4),
    )


@pytest.mark.parametrize("value", [1.9, 20.5, 0, -3])
def test_tempo_outside_the_range_is_refused_with_the_range(value):
    with pytest.raises(ValueError, match="between 2 and 20"):
        check_breaths_per_min(value)


def test_absolute_cycle_range():
    check_cycle_s(BreathPattern(MIN_CYCLE_S, 0, 0, 0))
    check_cycle_s(BreathPattern(MAX_CYCLE_S / 2, 0, MAX_CYCLE_S / 2, 0))
    with pytest.raises(ValueError, match="outside"):
        check_cycle_s(BreathPattern(1, 0, 1, 0))

"""Reading YAML nodes: libyaml composes what the Python composer would, or leaves it to it."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audioguide import yaml_nodes
from audioguide.routine import builtin_names, load_routine, parse_routine
from audioguide.yaml_nodes import RoutineLoader, compose_with_libyaml

needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")


def shape(node: yaml.Node | None) -> object:
    """Everything of a node tree that the readers use: kinds, tags, values, styles, lines."""
    if node is None:
        return None
    kind = (type(node).__name__, node.tag, node.start_mark.line)
    if isinstance(node, yaml.ScalarNode):
        return (*kind, node.value, node.style)
    if isinstance(node, yaml.SequenceNode):
        return (*kind, [shape(n) for n in node.value])
    return (*kind, [(shape(k), shape(v)) for k, v in node.value])


def python_composed(text: str) -> object:
    """The Python composer's tree of ``text``, or "refused"."""
    try:
        loader = RoutineLoader(text, "x.yaml")
    except yaml.YAMLError:
        return "refused"
    try:
        return shape(loader.get_single_node())
    except yaml.YAMLError:
        return "refused"
    finally:
        loader.dispose()


def builtin_texts() -> list[str]:
    folder = resources.files("audioguide")
    routines = [folder / "routines" / f"{name}.yaml" for name in builtin_names()]
    return [p.read_text("utf-8") for p in [*routines, folder / "programmes" / "back-pain.yaml"]]


@needs_libyaml
@pytest.mark.parametrize("text", builtin_texts(), ids=[*builtin_names(), "programme"])
def test_libyaml_composes_every_builtin_file_as_the_python_composer_does(text):
    root = compose_with_libyaml(text)
    assert root is not None  # the fast way is the one a built-in routine takes
    assert shape(root) == python_composed(text)


# What a routine is written with, and what the two composers were found to read differently.
PIECES = [*" \n\n\n  :-#\"'[]{},.a1é?!&*|>%\\~", "\t", "\r\n", "\r", "\ufeff", "\x85", "\u2028"]
PIECES += ["- ", ": ", "\n  ", "\n- ", "---", "...", "!!str ", "! ", "&a ", "*a", "|#", ">-\n"]
PIECES += ['"\\u00e9"', "'it''s'", "# c\n", "{gentle: 3, full: 5}", "[a, b]", "a?b", "? a"]


@st.composite
def mutated_routines(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(builtin_texts()))
    start = draw(st.integers(0, len(text) - 1))
    chars = list(text[start : start + draw(st.integers(20, 800))])
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(chars)))
        piece = draw(st.sampled_from(PIECES))
        how = draw(st.sampled_from(["insert", "replace", "delete"]))
        if how == "insert" or at == len(chars):
            chars.insert(at, piece)
        elif how == "replace":
            chars[at] = piece
        else:
            del chars[at]
    return "".join(chars)


@needs_libyaml
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_routines(), st.lists(st.sampled_from(PIECES), max_size=30).map("".join)))
def test_libyaml_composes_as_the_python_composer_does_or_leaves_it_to_it(text):
    root = compose_with_libyaml(text)
    if root is not None:
        assert shape(root) == python_composed(text)


@needs_libyaml
@pytest.mark.parametrize(
    "text",
    [
        "a: b\nc:\n  d: e\n",
        "a: \"x\"\nb: 'y'\nc: |\n  z\nd: >-\n  w\ne: [1, 2.5, true, ~]\n",
        "a: 1\r\nb:\r\n  - c\r\n",
        "say: Ready? Breathe in.\n",
        "say: Well done! Rest, 4*2 times.\n",
    ],
)
def test_plain_yaml_is_composed_by_libyaml(text):
    assert compose_with_libyaml(text) is not None
    assert shape(compose_with_libyaml(text)) == python_composed(text)


@needs_libyaml
@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a:\n  b: 1\n  c:\nd: 2\n", "an empty value: libyaml marks it on the next line"),
        ("a: ! 1\n", "a tag `!`: libyaml makes it text, Python a number"),
        ("a: [b?c]\n", "`?` in a flow value: only libyaml accepts it"),
        ("a: |#x\n  b\n", "a comment after a block header with no space: only libyaml"),
        ("a: !*! x\n", "a tag of characters only libyaml accepts"),
        ("a:\tb\n", "a tab"),
        ("\ufeffa: b\n", "a byte order mark"),
        ("a: &x b\nc: *x\n", "anchors and aliases"),
        ("%YAML 1.1\n---\na: b\n", "a directive"),
        ("a: b\u2028c: d\n", "a line break beyond CR and LF"),
        ("", "an empty document"),
        ("a: [b\n", "a syntax mistake: the Python composer names it"),
        ("[" * 161 + "]" * 161, "nested deeper than the Python composer allows"),
    ],
)
def test_what_the_composers_may_read_differently_is_left_to_the_python_one(text, why):
    assert compose_with_libyaml(text) is None, why


@pytest.mark.parametrize("name", builtin_names())
def test_a_routine_reads_the_same_without_libyaml(name, monkeypatch):
    routine = load_routine(name)
    monkeypatch.setattr(yaml_nodes.yaml, "__with_libyaml__", False)
    assert load_routine(name) == routine


def test_a_mistake_libyaml_would_mark_elsewhere_is_named_on_its_own_line():
    # libyaml marks an empty value on the line after its key; the message names the key's.
    text = "title:\nsections:\n  - title: Part\n    steps:\n      - bell: 3\n"
    with pytest.raises(yaml_nodes.RoutineError) as caught:
        parse_routine(text, source="calm.yaml")
    assert str(caught.value) == "calm.yaml:1: title: must be text (got nothing)"

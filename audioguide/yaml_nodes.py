"""Reading YAML nodes with their positions: the generic half of the routine stage.

A ``NodeReader`` turns the nodes of a composed YAML document (PyYAML's safe loader) into plain
values, one field at a time, and raises RoutineError naming the file, the line and the field
when a value is not what the field needs. It knows nothing of routines or steps: routine.py
reads a routine's structure with it, the step specs of steps.py read their fields with it, and
programme.py reads programmes with it. ``read_text`` and ``refuse_language_tags`` are the checks
both kinds of file get before their fields are read: a file that is one and is UTF-8 text, and
no tag that would build a Python object. ``compose_with_libyaml`` composes the plain YAML a
routine is written in with libyaml, when PyYAML has it, for the readers to try first.
"""

from __future__ import annotations

import difflib
import re
import stat
import unicodedata
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.composer import Composer
from yaml.resolver import Resolver

from .errors import RoutineError

T = TypeVar("T")
Node = yaml.Node

LEVELS = ("gentle", "full")
MAX_TEXT_CHARS = 1000
MAX_NODES = 50_000
MAX_DEPTH = 40  # steps within steps
# Lists and mappings within each other, checked as the document is composed: PyYAML composes
# recursively, so a few thousand brackets would exhaust the interpreter's stack first.
MAX_YAML_DEPTH = 4 * MAX_DEPTH  # a step nested in long form takes three
MAX_NUMBER_DIGITS = 1000
MAX_MISTAKES = 50  # in one file; past that, the first ones are enough to go on
MAX_FILE_BYTES = 1_000_000

_YAML = "tag:yaml.org,2002:"
_TAG_NAMES = {"int": "a whole number", "float": "a number", "bool": "true or false"}
# What a control character looks like in a string: C0 but tab and line ends, DEL, C1.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# 1e308 is text to YAML 1.1, which wants a dot and a signed exponent: 1.0e+308
_DOTLESS_FLOAT = re.compile(r"^([-+]?[0-9]+)(?:\.([0-9]*))?[eE]([-+]?)([0-9]+)$")


def read_text(path: Path) -> str:
    """A routine or programme file's text: refused (RoutineError naming the file) when it is
    not a regular file, is larger than MAX_FILE_BYTES, or is not UTF-8."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            # Never opened: a pipe would wait for a writer, a device give bytes for ever.
            raise RoutineError(not_a_file_message(mode), path=str(path))
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RoutineError(
                f"file is {size:,} bytes; a routine is at most {MAX_FILE_BYTES:,}", path=str(path)
            )
        data = path.read_bytes()
    except OSError as exc:
        raise RoutineError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if b"\0" in data:
        raise RoutineError(
            "not UTF-8 text (it has NUL bytes, as UTF-16 text does); save the file as UTF-8",
            path=str(path),
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RoutineError(
            f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", path=str(path)
        ) from None


def not_a_file_message(mode: int) -> str:
    """What a path that is not a regular file is, and what to give instead."""
    if stat.S_ISDIR(mode):
        return "is a folder, not a routine file; give the path of a .yaml file"
    if stat.S_ISFIFO(mode):
        return (
            "is a named pipe, not a routine file; save the routine as a .yaml file and give its "
            "path"
        )
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a routine file; give the path of a .yaml file"
    return "is not a regular file; give the path of a .yaml file"


_LANGUAGE_TAG = "tag:yaml.org,2002:python/"


def refuse_language_tags(root: Node, source: str) -> None:
    """Refuse ``!!python/...`` tags by name. The safe loader would never construct them, but
    its own message quotes the YAML back over several lines."""
    stack = [root]
    seen: set[int] = set()  # aliases can share a node, or make it contain itself
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag.startswith(_LANGUAGE_TAG):
            tag = "!!" + node.tag[len("tag:yaml.org,2002:") :]
            raise RoutineError(
                f"{tag.split(':')[0]}: tags that build Python objects are not allowed; "
                "a routine is plain text, numbers, lists and mappings",
                path=source,
                line=node.start_mark.line + 1,
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)


class RoutineLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than MAX_YAML_DEPTH while it composes."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise RoutineError(
                    f"the routine is nested more than {MAX_YAML_DEPTH} levels deep; a routine "
                    "needs only a few (look for brackets that never close)",
                    path=self.source,
                    line=mark.line + 1,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _NotSure(Exception):
    """What libyaml composed may not be what the Python composer would: compose it there."""


# What libyaml and PyYAML's Python scanner read differently, or only one of them accepts (found
# by composing thousands of mutated routines with both): tabs, a byte order mark, line breaks
# beyond CR and LF, tags (`!` where a token starts), anchors and aliases, directives, and a
# block scalar's header with a comment that no space sets off (`|#`). None of them is needed to
# write a routine; a file with any of them is composed in Python.
_NOT_FOR_LIBYAML = re.compile(
    r"[\t\ufeff\x85\u2028\u2029]|(?:^|[\s\[{,:])[!&*]|^%|[|>][-+0-9]*#", re.MULTILINE
)

if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _LibyamlComposer(Composer, CParser, Resolver):
        """PyYAML's composer on libyaml's events: nodes as the safe loader makes them, their
        marks from libyaml, nested at most MAX_YAML_DEPTH deep (no deeper recursion here)."""

        def __init__(self, text: str):
            CParser.__init__(self, text)
            Composer.__init__(self)
            Resolver.__init__(self)
            self.depth = 0

        def compose_node(self, parent: Node | None, index: Any) -> Node | None:
            self.depth += 1
            try:
                if self.depth > MAX_YAML_DEPTH:
                    raise _NotSure
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1


def compose_with_libyaml(text: str) -> Node | None:
    """The root node of one YAML document, composed on libyaml's events (15 to 20 times as
    fast as PyYAML's Python scanner and parser), as the Python composer (RoutineLoader)
    would compose it: the same nodes, tags, values, styles and lines.

    None when that cannot be promised, and the Python composer must read the text: PyYAML
    without libyaml, text that the two may read differently (see ``_NOT_FOR_LIBYAML``), text
    that libyaml refuses (the Python composer names the mistake), an empty document, an empty
    value (the two mark it on different lines), a plain value with ``?`` in a flow collection
    (which only libyaml accepts), or nesting deeper than MAX_YAML_DEPTH. Check the text with
    RoutineLoader first: libyaml does not refuse every character PyYAML's reader does.
    """
    if not yaml.__with_libyaml__ or _NOT_FOR_LIBYAML.search(text):
        return None
    composer = _LibyamlComposer(text)
    try:
        root = composer.get_single_node()
    except (yaml.YAMLError, _NotSure):
        return None
    finally:
        composer.dispose()
    if root is None or not _as_the_python_composer_would(root):
        return None
    return root


def _as_the_python_composer_would(root: Node) -> bool:
    """Whether the Python composer would compose the same nodes (above): libyaml's plain
    style (``""``) made PyYAML's (None) on the way."""
    stack = [(root, False)]
    while stack:
        node, in_flow = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if not node.style:
                if not node.value or (in_flow and "?" in node.value):
                    return False
                node.style = None
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((n, in_flow or bool(node.flow_style)) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            in_flow = in_flow or bool(node.flow_style)
            stack.extend((n, in_flow) for pair in node.value for n in pair)
    return True


class NodeReader:
    """Reads values out of the nodes of one YAML document loaded from ``source``."""

    def __init__(self, loader: yaml.SafeLoader, source: str):
        self.loader = loader
        self.source = source
        self.nodes_seen = 0
        # A step written in short form (`- pause: 3`) is reported as written: where -> (field,
        # the key it was written under).
        self.shorthand: dict[str, tuple[str, str]] = {}
        # Every mistake found so far, in reading order; reading goes on after most of them.
        self.mistakes: list[RoutineError] = []
        self.stopped = False  # too large, or too many mistakes: the first exception ends it

    def report(self, mistake: RoutineError) -> None:
        """Note a mistake and read on."""
        self.mistakes.append(mistake)
        if len(self.mistakes) >= MAX_MISTAKES:
            self.stopped = True

    def collect(self, read: Callable[[], T], fallback: T) -> T:
        """``read()``, or ``fallback`` with its mistake reported, so the reading goes on to
        find the next one."""
        try:
            return read()
        except RoutineError as mistake:
            if self.stopped:
                raise
            self.report(mistake)
            return fallback

    def fail(self, node: Node, where: str, message: str) -> RoutineError:
        prefix = f"{where}: " if where else ""
        return RoutineError(f"{prefix}{message}", path=self.source, line=node.start_mark.line + 1)

    def field_path(self, where: str, name: str) -> str:
        field, written = self.shorthand.get(where, ("", ""))
        return f"{where}.{written if name == field else name}"

    def count(self, node: Node, where: str, depth: int) -> None:
        self.nodes_seen += 1
        if self.nodes_seen > MAX_NODES or depth > MAX_DEPTH:
            self.stopped = True
            raise self.fail(node, where, "the routine is too large or too deeply nested")

    def mapping(
        self, node: Node, where: str, allowed: tuple[str, ...], what: str
    ) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"must be a mapping of {what} (key: value lines)")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self.collect(partial(self.key, key_node, where, allowed, what, out), None)
            if key is not None:
                out[key] = (key_node, value_node)
        return out

    def key(
        self, node: Node, where: str, allowed: tuple[str, ...], what: str, seen: dict[str, Any]
    ) -> str:
        """The name of a field of a mapping at ``where`` that may have ``allowed``."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, where, "keys must be plain names")
        key = str(node.value)
        self.check_characters(node, where, key)
        if key == "<<":
            raise self.fail(node, where, "YAML merge keys (<<) are not supported")
        if key in seen:
            raise self.fail(node, join(where, key), "appears twice; keep one")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.fail(
                node,
                join(where, key),
                f"unknown field; {hint}{what} may have: {', '.join(allowed)}",
            )
        return key

    def sequence(self, node: Node, where: str, what: str) -> list[Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, where, f"must be a list of {what} (lines starting with '- ')")
        if not node.value:
            raise self.fail(node, where, f"must list at least one of {what}")
        return list(node.value)

    def scalar(self, node: Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            raise self.fail(node, where, f"must be a single value, not {kind}")
        self.check_tag(node, where)
        try:
            value = self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            tag = node.tag[len(_YAML) :]
            if tag in _TAG_NAMES:
                raise self.fail(node, where, _bad_tagged(tag, node.value)) from None
            raise self.fail(node, where, f"cannot read this value ({exc})") from None
        if isinstance(value, str):
            self.check_characters(node, where, value)
        return value

    def check_tag(self, node: yaml.ScalarNode, where: str) -> None:
        """Refuse what PyYAML's constructors would fail on with their own exceptions: an
        explicit standard tag on a value that is not of its kind (``!!bool maybe``), a tag
        beyond plain values, or a number too long to read."""
        plain = node.style is None
        implicit = self.loader.resolve(yaml.ScalarNode, node.value, (plain, True))
        tag = node.tag[len(_YAML) :] if node.tag.startswith(_YAML) else node.tag
        if tag == "int" and len(node.value) > MAX_NUMBER_DIGITS:
            raise self.fail(
                node, where, f"is a number of {len(node.value):,} digits; no field takes one"
            )
        if node.tag == implicit or tag in ("str", "null", "int", "float"):
            return  # int and float: a value that is not one fails to construct, said below
        if tag == "bool":
            if node.value.lower() not in self.loader.bool_values:
                raise self.fail(node, where, _bad_tagged(tag, node.value))
        elif tag == "timestamp":
            if not self.loader.timestamp_regexp.match(node.value):
                raise self.fail(
                    node,
                    where,
                    f"!!timestamp {node.value!r} is not a date such as 2024-05-01; remove the tag",
                )
        else:
            shown = f"!!{tag}" if node.tag.startswith(_YAML) else tag
            raise self.fail(
                node,
                where,
                f"the tag {shown} is not allowed here; remove it (a routine is plain text, "
                "numbers, lists and mappings)",
            )

    def check_characters(self, node: Node, where: str, text: str) -> None:
        """Refuse what is not text: halves of UTF-16 surrogate pairs (what JSON writers emit
        for an emoji, which YAML does not join) and control characters written as escapes
        (terminal escape sequences); the YAML reader refuses them written as they are."""
        surrogate = _SURROGATE.search(text)
        if surrogate:
            raise self.fail(node, where, _surrogate_message(text, surrogate.start()))
        control = _CONTROL.search(text)
        if control:
            raise self.fail(
                node,
                where,
                f"contains the control character U+{ord(control.group()):04X}; remove it "
                "(terminal escape sequences and control codes are not text)",
            )

    def text(self, node: Node, where: str, *, allow_empty: bool = False) -> str:
        value = self.scalar(node, where)
        if value is None or isinstance(value, bool | list | dict):
            raise self.fail(node, where, f"must be text (got {show(value)})")
        text = " ".join(str(value).split())
        if not text and not allow_empty:
            raise self.fail(node, where, "must not be empty")
        if len(text) > MAX_TEXT_CHARS:
            raise self.fail(
                node, where, f"is {len(text)} characters; keep it under {MAX_TEXT_CHARS}"
            )
        return text

    def spoken_text(self, node: Node, where: str) -> str:
        """Text the voice will speak: it must hold a letter or a digit, or the engine makes
        no sound of it (``...``, ``-``, invisible marks)."""
        text = self.text(node, where)
        if not any(unicodedata.category(c)[0] in "LN" for c in text):
            raise self.fail(
                node,
                where,
                f"has nothing to pronounce ({text!r}); write words to speak, or remove it",
            )
        return text

    def number(
        self, node: Node, where: str, low: float, high: float, unit: str, *, low_open: bool = False
    ) -> float:
        value = self.scalar(node, where)
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        rule = f"must be a number{_of(unit)} {bound} and <= {high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(node, where, f"{rule} (got {show(value)}{_float_hint(value)})")
        # Compared before any float(): an int too large for a float compares exactly.
        above_low = value > low if low_open else value >= low
        if not (above_low and value <= high):  # NaN is neither
            raise self.fail(node, where, f"{rule} (got {_shown_number(value)})")
        return float(value)

    def integer(self, node: Node, where: str, low: int, high: int, unit: str) -> int:
        value = self.scalar(node, where)
        rule = f"must be a whole number{_of(unit)} from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(node, where, f"{rule} (got {show(value)})")
        if not (low <= value <= high):
            raise self.fail(node, where, f"{rule} (got {_shown_number(value)})")
        return value

    def flag(self, node: Node, where: str) -> bool:
        value = self.scalar(node, where)
        if not isinstance(value, bool):
            raise self.fail(node, where, f"must be true or false (got {show(value)})")
        return value

    def choice(self, node: Node, where: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, where)
        if not isinstance(value, str) or value not in choices:
            raise self.fail(node, where, f"must be one of {', '.join(choices)} (got {show(value)})")
        return value

    def by_level(self, node: Node, where: str, read: Callable[[Node, str], T]) -> tuple[T, T]:
        """A value, or ``{gentle: a, full: b}``: the (gentle, full) pair."""
        if not isinstance(node, yaml.MappingNode):
            value = read(node, where)
            return value, value
        fields = self.mapping(node, where, LEVELS, "values by level (gentle: and full:)")
        for level in LEVELS:
            if level not in fields:
                raise self.fail(
                    node, f"{where}.{level}", "missing; give a value for both gentle: and full:"
                )
        return (
            read(fields["gentle"][1], f"{where}.gentle"),
            read(fields["full"][1], f"{where}.full"),
        )


def is_by_level(node: Node) -> bool:
    """Whether a mapping is ``{gentle: .., full: ..}`` rather than a step's own fields."""
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    return bool(keys) and all(k in LEVELS for k in keys)


def is_null(node: Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


def _of(unit: str) -> str:
    return f" of {unit}" if unit else ""


def _shown_number(value: float) -> str:
    digits = len(str(abs(value))) if isinstance(value, int) else 0
    return f"a number of {digits} digits" if digits > 20 else f"{value}"


def _float_hint(value: Any) -> str:
    """For ``1e308``, which YAML 1.1 reads as text: how to write it as a number."""
    match = _DOTLESS_FLOAT.match(value) if isinstance(value, str) else None
    if not match:
        return ""
    whole, fraction, sign, exponent = match.groups()
    return f"; YAML reads {value} as text: write {whole}.{fraction or 0}e{sign or '+'}{exponent}"


def _bad_tagged(tag: str, value: str) -> str:
    fix = "write true or false" if tag == "bool" else "write digits"
    return f"!!{tag} {value!r} is not {_TAG_NAMES[tag]}; {fix}, or remove the tag"


def _surrogate_message(text: str, at: int) -> str:
    high = ord(text[at])
    low = ord(text[at + 1]) if at + 1 < len(text) else 0
    if 0xD800 <= high < 0xDC00 and 0xDC00 <= low <= 0xDFFF:
        code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        return (
            f'"\\u{high:04x}\\u{low:04x}" is a UTF-16 surrogate pair, which YAML does not join '
            f'into one character; write the character itself, or "\\U{code:08x}"'
        )
    return (
        f'"\\u{high:04x}" is half of a UTF-16 surrogate pair, not a character; write the '
        'character itself, or its code as "\\U0001f600"'
    )

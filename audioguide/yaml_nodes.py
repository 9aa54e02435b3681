"""Reading YAML nodes with their positions: the generic half of the routine stage.

A ``NodeReader`` turns the nodes of a composed YAML document (PyYAML's safe loader) into plain
values, one field at a time, and raises RoutineError naming the file, the line and the field
when a value is not what the field needs. It knows nothing of routines or steps: routine.py
reads a routine's structure with it, and the step specs of steps.py read their fields with it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from .errors import RoutineError

T = TypeVar("T")
Node = yaml.Node

LEVELS = ("gentle", "full")
MAX_TEXT_CHARS = 1000
MAX_NODES = 50_000
MAX_DEPTH = 40


class NodeReader:
    """Reads values out of the nodes of one YAML document loaded from ``source``."""

    def __init__(self, loader: yaml.SafeLoader, source: str):
        self.loader = loader
        self.source = source
        self.nodes_seen = 0
        # A step written in short form (`- pause: 3`) is reported as written: where -> (field,
        # the key it was written under).
        self.shorthand: dict[str, tuple[str, str]] = {}

    def fail(self, node: Node, where: str, message: str) -> RoutineError:
        prefix = f"{where}: " if where else ""
        return RoutineError(f"{prefix}{message}", path=self.source, line=node.start_mark.line + 1)

    def field_path(self, where: str, name: str) -> str:
        field, written = self.shorthand.get(where, ("", ""))
        return f"{where}.{written if name == field else name}"

    def count(self, node: Node, where: str, depth: int) -> None:
        self.nodes_seen += 1
        if self.nodes_seen > MAX_NODES or depth > MAX_DEPTH:
            raise self.fail(node, where, "the routine is too large or too deeply nested")

    def mapping(
        self, node: Node, where: str, allowed: tuple[str, ...], what: str
    ) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"must be a mapping of {what} (key: value lines)")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, where, "keys must be plain names")
            key = str(key_node.value)
            if key == "<<":
                raise self.fail(key_node, where, "YAML merge keys (<<) are not supported")
            if key in out:
                raise self.fail(key_node, join(where, key), "appears twice; keep one")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(
                    key_node,
                    join(where, key),
                    f"unknown field; {hint}{what} may have: {', '.join(allowed)}",
                )
            out[key] = (key_node, value_node)
        return out

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
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self.fail(node, where, f"cannot read this value ({exc})") from None

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

    def number(
        self, node: Node, where: str, low: float, high: float, unit: str, *, low_open: bool = False
    ) -> float:
        value = self.scalar(node, where)
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        rule = f"must be a number of {unit} {bound} and <= {high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(node, where, f"{rule} (got {show(value)})")
        number = float(value)
        if number != number or (low_open and number <= low) or number < low or number > high:
            raise self.fail(node, where, f"{rule} (got {value})")
        return number

    def integer(self, node: Node, where: str, low: int, high: int, unit: str) -> int:
        value = self.scalar(node, where)
        rule = f"must be a whole number of {unit} from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(node, where, f"{rule} (got {show(value)})")
        if not (low <= value <= high):
            raise self.fail(node, where, f"{rule} (got {value})")
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

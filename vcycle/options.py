"""Declarations of configuration options and the parsers of their values.

The core's sections and every connector declare their keys with ``Option``;
``parse_section`` turns the raw strings of one INI section into typed values
and reports every problem it finds with file, section and key. Adding a
cloud adds an options model next to its connector and never touches
``config.py``.

Must not read files, log, or know about any particular section.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vcycle.errors import ConfigProblem

Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Option:
    """One key of a section: how its value is parsed, its default, whether it is secret."""

    name: str
    parse: Parser
    default: Any = None
    required: bool = False
    secret: bool = False
    help: str = ""


@dataclass(frozen=True, slots=True)
class RawValue:
    """A value as read from a file, with the file it came from."""

    value: str
    file: str


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """The keys a connector adds to its spaces and machinetypes."""

    space: Mapping[str, Option] = field(default_factory=dict)
    machinetype: Mapping[str, Option] = field(default_factory=dict)
    # Keys the old vcycle accepted for this api that no longer do anything.
    no_effect: Mapping[str, str] = field(default_factory=dict)
    # Checks across keys of a space: values -> [(key, problem)].
    check: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None


def options(*items: Option) -> dict[str, Option]:
    """A name -> Option table."""
    return {o.name: o for o in items}


# Value parsers. Each raises ValueError with a message meant for a site admin.


def text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def words(value: str) -> tuple[str, ...]:
    return tuple(value.split())


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{value.strip()!r} is not a whole number") from None
        if minimum is not None and number < minimum:
            raise ValueError(f"{number} is less than the smallest allowed, {minimum}")
        if maximum is not None and number > maximum:
            raise ValueError(f"{number} is more than the largest allowed, {maximum}")
        return number

    return parse


def number(minimum: float | None = None, maximum: float | None = None) -> Parser:
    def parse(value: str) -> float:
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError(f"{value.strip()!r} is not a number") from None
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError(f"{value.strip()!r} is not a finite number")
        if minimum is not None and result < minimum:
            raise ValueError(f"{result:g} is less than the smallest allowed, {minimum:g}")
        if maximum is not None and result > maximum:
            raise ValueError(f"{result:g} is more than the largest allowed, {maximum:g}")
        return result

    return parse


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{value.strip()!r} is not true or false")


def choice(*allowed: str) -> Parser:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in allowed:
            raise ValueError(f"{value.strip()!r} is not one of {', '.join(allowed)}")
        return lowered

    return parse


def matching(pattern: str, what: str) -> Parser:
    compiled = re.compile(pattern)

    def parse(value: str) -> str:
        value = value.strip()
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return parse


def unix_time(value: str) -> datetime:
    seconds = integer(minimum=0)(value)
    return datetime.fromtimestamp(seconds, tz=UTC)


def host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value.strip()!r} is not HOST:PORT")
    return host.strip("[]"), integer(1, 65535)(port)


def host_ports(value: str) -> tuple[tuple[str, int], ...]:
    return tuple(host_port(item) for item in value.split())


def parse_section(
    table: Mapping[str, Option],
    raw: Mapping[str, RawValue],
    section: str,
    section_file: str,
    problems: list[ConfigProblem],
) -> dict[str, Any]:
    """Typed values for every option in ``table``; problems are appended, not raised.

    Keys of ``raw`` not in ``table`` are ignored here: the caller decides
    whether they are unknown.
    """
    values: dict[str, Any] = {}
    for name, option in table.items():
        item = raw.get(name)
        if item is None:
            if option.required:
                problems.append(ConfigProblem(section_file, section, name, "is required"))
            values[name] = option.default
            continue
        try:
            values[name] = option.parse(item.value)
        except ValueError as exc:
            problems.append(ConfigProblem(item.file, section, name, str(exc)))
            values[name] = option.default
    return values


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """' (did you mean x?)' for a near miss, else ''."""
    close = difflib.get_close_matches(key, sorted(set(known)), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


SECRET_WORDS = ("password", "secret", "token", "credential")


def looks_secret(key: str) -> bool:
    """Whether a free-form key (such as user_data_option_XXX) should be masked."""
    return any(word in key for word in SECRET_WORDS)

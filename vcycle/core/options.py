"""How a configuration key is declared, once, and how its value is parsed.

Each section's keys are the fields of one frozen dataclass, every one made
with ``key(parse, default, doc)``: the field's name is the key, ``parse``
turns the file's text into the typed value (or raises ValueError with a
message meant for a site admin), ``default`` is the value when the key is not
given (``REQUIRED``: it must be), ``doc`` is its one line of documentation.
``table(cls)`` gives a section's keys to the loader, which parses a file's
section with ``parse_section`` and builds ``cls`` from the result; fields
made without ``key`` are the loader's own (where the section is, values
derived from others). The core's sections declare their keys in
vcycle/core/sections.py, and every connector and demand source its own, in
its module: nothing restates a key, its type or its default.

Pure: no files, no logging.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

from vcycle.errors import ConfigProblem

Parser = Callable[[str], Any]
T = TypeVar("T")
_OPTION = "vcycle.option"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # the default of a key that must be given


@dataclass(frozen=True, slots=True)
class Option:
    """One key of a section: how its value is parsed, its default, whether it is secret, its doc line."""

    name: str
    parse: Parser
    default: Any = None
    required: bool = False
    secret: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class RawValue:
    """A value as read from a file, with the file (and line) it came from."""

    value: str
    file: str
    line: int = 0


def key(parse: Parser, default: Any = None, doc: str = "", *, secret: bool = False) -> Any:
    """A dataclass field that is a configuration key (its name is the field's)."""
    required = default is REQUIRED
    option = Option("", parse, None if required else default, required, secret, doc)
    metadata = {_OPTION: option}
    if required:
        return dataclasses.field(default=None, metadata=metadata)
    if isinstance(default, dict | list | set):
        return dataclasses.field(default_factory=lambda: copy.copy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def table(cls: type) -> Mapping[str, Option]:
    """The keys a section dataclass declares, by name (read-only: found once per class, a configuration of many
    sections asks for each class's keys once per section)."""
    return _table(cls)


@functools.cache  # behind table(): the cache's own signature would take any hashable, not a class
def _table(cls: type) -> Mapping[str, Option]:
    return MappingProxyType({f.name: dataclasses.replace(f.metadata[_OPTION], name=f.name)
                             for f in dataclasses.fields(cls) if _OPTION in f.metadata})


def default_of(cls: type, name: str) -> Any:
    """The declared default of key ``name`` of ``cls`` (for a value wanted where no section gives it)."""
    return table(cls)[name].default


def values_of(options: object) -> dict[str, Any]:
    """The keys of a section object and their values (for display)."""
    return {name: getattr(options, name) for name in table(type(options))}


def options_of(value: object, cls: type[T]) -> T:
    """``value`` as ``cls``: a plugin reading the options it declared; TypeError if they are another's."""
    if not isinstance(value, cls):
        raise TypeError(f"expected {cls.__name__} options, got {type(value).__name__}")
    return value


# Value parsers. Each raises ValueError with a message meant for a site admin.


def text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def words(value: str) -> tuple[str, ...]:
    return tuple(value.split())


LARGEST = 10**15  # no count, size or time vcycle reads is larger: it keeps arithmetic quick and dates in range
SECONDS_LIMIT = 10 * 366 * 86400  # ten years: the longest time any *_seconds key may say


def integer(minimum: int | None = None, maximum: int = LARGEST) -> Parser:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{value.strip()!r} is not a whole number") from None
        if minimum is not None and number < minimum:
            raise ValueError(f"{number} is less than the smallest allowed, {minimum}")
        if number > maximum:
            raise ValueError(f"{number} is more than the largest allowed, {maximum}")
        return number

    return parse


def seconds(minimum: int = 0) -> Parser:
    """A whole number of seconds, at most ten years."""
    return integer(minimum, SECONDS_LIMIT)


def number(minimum: float | None = None, maximum: float = LARGEST) -> Parser:
    def parse(value: str) -> float:
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError(f"{value.strip()!r} is not a number") from None
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError(f"{value.strip()!r} is not a finite number")
        if minimum is not None and result < minimum:
            raise ValueError(f"{result:g} is less than the smallest allowed, {minimum:g}")
        if result > maximum:
            raise ValueError(f"{result:g} is more than the largest allowed, {maximum:g}")
        return result

    return parse


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


@dataclass(frozen=True, slots=True)
class Budget:
    """A count of machines, or a percentage of some total of them (rounded up: 10 % of 5 is 1)."""

    count: int | None = None
    percent: float | None = None

    def of(self, total: int) -> int:
        if self.count is not None:
            return self.count
        return math.ceil(total * (self.percent or 0.0) / 100 - 1e-9)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def budget(value: str) -> Budget:
    """``N`` machines or ``P%`` of them (0 to 100)."""
    found = value.strip()
    if found.endswith("%"):
        return Budget(percent=number(0.0, 100.0)(found[:-1]))
    try:
        return Budget(count=integer(0)(found))
    except ValueError:
        raise ValueError(f"{found!r} is neither a count of machines nor a percentage such as 10%") from None


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
            values[name] = copy.copy(option.default)
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


SECRET_WORDS = ("password", "secret", "token", "credential", "private_key", "munge_key")


def looks_secret(key: str) -> bool:
    """Whether a free-form key (such as user_data_option_XXX) should be masked."""
    return any(word in key for word in SECRET_WORDS)

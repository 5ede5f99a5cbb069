"""vcycle's INI files: which files a set of paths names, and their sections and keys, with the line of each.

Files are read as the original vcycle read them: every ``*.conf`` in a
directory in sorted order, sections of the same name merged and later values
winning. What a site admin would want to be told is said here, with the
places: a key given twice (in one file or across files), a section header
given twice in one file, a file starting with a UTF-8 byte-order mark (read
as if it did not), a section header left unclosed.

Reads files; does not log.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vcycle.core.options import RawValue
from vcycle.errors import ConfigProblem

Raw = dict[str, RawValue]
_KEY = re.compile(r"([^=:\s][^=:]*?)\s*[=:]")


@dataclass
class Read:
    """Every section of a file set: name -> key -> RawValue (with file and line), merged in file order; the
    file each section first appeared in; and what was noticed on the way."""

    sections: dict[str, Raw]
    origin: dict[str, str]
    problems: list[ConfigProblem]
    warnings: list[ConfigProblem]


def expand_paths(
    paths: Sequence[str | os.PathLike[str]], problems: list[ConfigProblem], *, required: bool
) -> list[str]:
    """The files named by ``paths``: files as given, directories as their sorted ``*.conf``."""
    files: list[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            files.extend(sorted(glob.glob(os.path.join(path, "*.conf"))))
        elif os.path.exists(path):
            files.append(path)
        elif required:
            problems.append(ConfigProblem(path, "", "", "no such file or directory"))
    return files


def read_files(files: Sequence[str]) -> Read:
    """Read every file of ``files`` (in that order); problems and warnings are collected, not raised."""
    found = Read({}, {}, [], [])
    for path in files:
        text = _text(path, found)
        if text is None:
            continue
        parser = configparser.RawConfigParser(strict=False, delimiters=("=", ":"), interpolation=None)
        try:
            parser.read_string(text, source=path)
        except configparser.Error as exc:
            found.problems.append(ConfigProblem(path, "", "", _parse_error(exc, text)))
            continue
        lines = _lines(text, path, found.warnings)
        for section in parser.sections():
            name = normal(section)
            found.origin.setdefault(name, path)
            target = found.sections.setdefault(name, {})
            for key, value in parser.items(section):
                line = lines.get((name, key), 0)
                earlier = target.get(key)
                if earlier is not None and earlier.file != path:
                    found.warnings.append(ConfigProblem(path, name, key, f"line {line}: also given in {earlier.file} "
                                                        f"line {earlier.line}; this one wins"))
                target[key] = RawValue(value, path, line)
    return found


def normal(section: str) -> str:
    """A section's name as vcycle compares it: lower case, single spaces."""
    return " ".join(section.lower().split())


def _text(path: str, found: Read) -> str | None:
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        found.problems.append(ConfigProblem(path, "", "", f"cannot be read: {exc.strerror}"))
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        found.warnings.append(ConfigProblem(path, "", "", "starts with a UTF-8 byte-order mark (BOM), which some "
                                            "editors add: ignored"))
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        found.problems.append(ConfigProblem(path, "", "", f"line {line}: is not UTF-8 text"))
        return None
    for number, line_text in enumerate(text.splitlines(), 1):
        if line_text.startswith("[") and "]" not in line_text:
            found.problems.append(ConfigProblem(path, "", "", f"line {number}: the section header "
                                                f"{line_text.strip()!r} is not closed: write [NAME]"))
            return None
    return text


def _lines(text: str, path: str, warnings: list[ConfigProblem]) -> dict[tuple[str, str], int]:
    """(section, key) -> the line it is given on (the last, if twice); warns of what a file gives twice."""
    lines: dict[tuple[str, str], int] = {}
    headers: dict[str, int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", ";")) or line[:1].isspace():
            continue  # blank, a comment, or a value's continuation
        if line.startswith("["):
            section = normal(line[1:line.index("]")])
            if section in headers:
                warnings.append(ConfigProblem(path, section, "", f"line {number}: the section is given again "
                                              f"(first on line {headers[section]}); their keys are merged"))
            headers.setdefault(section, number)
            continue
        match = _KEY.match(line)
        if match is None:
            continue
        key = match.group(1).strip().lower()
        if (section, key) in lines:
            warnings.append(ConfigProblem(path, section, key, f"line {number}: given again (first on line "
                                          f"{lines[(section, key)]}); this one wins"))
        lines[(section, key)] = number
    return lines


def _parse_error(exc: configparser.Error, text: str) -> str:
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a key before any [section] header"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in exc.errors)
        return f"cannot parse line(s) {lines}: expected 'key = value'"
    return exc.message if hasattr(exc, "message") else str(exc)

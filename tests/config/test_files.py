"""Reading the INI files: what a site admin gets told about the files themselves, with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from vctest import config_text

from vcycle.config import load_config
from vcycle.errors import ConfigError


def load(tmp_path: Path, *texts: str | bytes) -> tuple[list[str], list[str]]:
    """(warnings, errors) of loading ``texts`` as 10.conf, 20.conf, ... of one directory."""
    for number, text in enumerate(texts, 1):
        path = tmp_path / f"{number}0.conf"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    try:
        config = load_config([tmp_path], hostname="h")
    except ConfigError as exc:
        return [], [str(p) for p in exc.problems]
    return [str(w) for w in config.warnings], []


def test_a_byte_order_mark_is_said_and_the_file_still_loads(tmp_path: Path) -> None:
    warnings, errors = load(tmp_path, b"\xef\xbb\xbf" + config_text().encode())
    assert errors == []
    assert f"{tmp_path}/10.conf: starts with a UTF-8 byte-order mark (BOM), which some editors add: ignored" \
        in warnings


def test_an_unclosed_section_header_gets_its_own_message(tmp_path: Path) -> None:
    _, errors = load(tmp_path, config_text().replace("[space sp]", "[space sp"))
    line = config_text().splitlines().index("[space sp]") + 1
    assert errors == [f"{tmp_path}/10.conf: line {line}: the section header '[space sp' is not closed: "
                      "write [NAME]"]


def test_a_key_given_twice_in_one_file_warns_with_both_lines(tmp_path: Path) -> None:
    text = config_text(limit=10) + "[space sp]\nprocessors_limit = 20\n"
    warnings, errors = load(tmp_path, text)
    first = text.splitlines().index("processors_limit = 10") + 1
    again = len(text.splitlines())
    header = len(text.splitlines()) - 1
    assert errors == []
    assert f"{tmp_path}/10.conf: [space sp] processors_limit: line {again}: given again (first on line {first}); " \
           "this one wins" in warnings
    assert any(w.startswith(f"{tmp_path}/10.conf: [space sp]: line {header}: the section is given again")
               for w in warnings)


def test_a_key_given_in_two_files_warns_with_both_places(tmp_path: Path) -> None:
    warnings, _ = load(tmp_path, config_text(limit=10), "[space sp]\n\nprocessors_limit = 20\n")
    first = config_text(limit=10).splitlines().index("processors_limit = 10") + 1
    assert f"{tmp_path}/20.conf: [space sp] processors_limit: line 3: also given in {tmp_path}/10.conf line " \
           f"{first}; this one wins" in warnings


def test_a_relative_sqlite_path_is_warned_about(tmp_path: Path) -> None:
    warnings, _ = load(tmp_path, config_text(settings={"state_url": "sqlite:///state.db"}))
    assert any("state_url: sqlite:///state.db is relative to the working directory of each command" in w
               for w in warnings)
    warnings, _ = load(tmp_path, config_text(settings={"state_url": f"sqlite:///{tmp_path}/state.db"}))
    assert not any("relative" in w for w in warnings)


@pytest.mark.parametrize("url", ["mysql://db/vcycle", "state.db", "oracle+cx://x"])
def test_a_state_url_the_store_cannot_use_is_an_error_naming_the_key(tmp_path: Path, url: str) -> None:
    _, errors = load(tmp_path, config_text(settings={"state_url": url}))
    assert len(errors) == 1 and "[settings] state_url: " in errors[0]
    assert "is not a database vcycle can keep its state in" in errors[0]


@pytest.mark.parametrize(("key", "value", "words"), [
    ("processors_limit", "100000000000000000000000000", "is more than the largest allowed"),
    ("max_wallclock_seconds", "1e26", "is not a whole number"),
    ("max_wallclock_seconds", "99999999999", "is more than the largest allowed, 316224000"),
    ("backoff_seconds", "400000000", "is more than the largest allowed"),
])
def test_counts_and_times_have_sane_upper_bounds(tmp_path: Path, key: str, value: str, words: str) -> None:
    """1e26 processors made ``plan`` hang; a wallclock past datetime's range would crash a cycle."""
    space = {key: value} if key == "processors_limit" else None
    mts = None if space else {"mt": {key: value}}
    _, errors = load(tmp_path, config_text(space=space, machinetypes=mts, limit=None))
    assert len(errors) == 1 and key in errors[0] and words in errors[0], errors

"""Drift (vcycle/core/drift.py): a machine's fingerprint changes with what shapes a machine and nothing else,
and tells which part changed."""

from __future__ import annotations

import dataclasses

from vctest import make_config

from vcycle.core.drift import VERSION, drifted, fingerprint

BASE = {"root_image": "image:cernvm-5.1", "flavor_names": "m1.large", "user_data": "pilot-container",
        "user_data_option_queue": "lhcb", "target_share": 1}


def _made(templates: tuple[str, ...] = ("echo pilot",), **changes: object) -> str:
    config = make_config(machinetypes={"mt": {**BASE, **changes}})
    space = config.spaces["sp"]
    return fingerprint(space, space.machinetypes["mt"], list(templates))


def test_each_part_that_shapes_a_machine_drifts_by_its_own_name() -> None:
    now = _made()
    assert now.startswith(f"{VERSION}:image=") and drifted(now, now) == ()
    assert drifted(_made(root_image="image:cernvm-5.2"), now) == ("image",)
    assert drifted(_made(flavor_names="m1.xlarge"), now) == ("flavor",)
    assert drifted(_made(min_processors=4), now) == ("flavor",)
    assert drifted(_made(("echo pilot v2",)), now) == ("user-data",)  # the template's text
    assert drifted(_made(user_data_option_queue="atlas"), now) == ("user-data",)
    assert drifted(_made(root_image="image:x", user_data_option_queue="atlas"), now) == ("image", "user-data")


def test_rules_and_secrets_are_not_what_a_machine_is() -> None:
    now = _made()
    for change in ({"target_share": 5}, {"processors_limit": 3}, {"backoff_seconds": 10}, {"fizzle_seconds": 1},
                   {"max_wallclock_seconds": 3600}, {"user_data_option_password": "new one"}):
        assert drifted(_made(**change), now) == (), change
    assert "new one" not in _made(user_data_option_password="new one")


def test_a_machine_made_before_drift_was_kept_or_under_another_hashing_rule_is_not_drifted() -> None:
    now = _made()
    assert drifted(None, now) == () and drifted("", now) == ()
    assert drifted("0:image=abc,flavor=def", now) == ()  # another hashing version
    assert drifted(now, "") == ()


def test_the_loader_fingerprints_each_machinetype_with_its_templates_text(tmp_path) -> None:  # type: ignore[no-untyped-def]
    template = tmp_path / "ud.sh"
    template.write_text("#!/bin/sh\necho one\n")
    first = make_config(machinetypes={"mt": {**BASE, "user_data": str(template)}}).spaces["sp"].machinetypes["mt"]
    template.write_text("#!/bin/sh\necho two\n")
    second = make_config(machinetypes={"mt": {**BASE, "user_data": str(template)}}).spaces["sp"].machinetypes["mt"]
    assert drifted(first.made_by, second.made_by) == ("user-data",)
    shipped = make_config(machinetypes={"mt": BASE}).spaces["sp"].machinetypes["mt"]
    assert drifted(shipped.made_by, dataclasses.replace(shipped).made_by) == () and shipped.made_by

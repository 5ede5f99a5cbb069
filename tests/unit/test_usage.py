"""What a machine used (vcycle/core/usage.py) and how APEL is told (vcycle/accounting/apel.py): pure rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from vctest import T0, make_config, rec

from vcycle.accounting import apel
from vcycle.core.states import MachineState
from vcycle.core.usage import add, end_of, usage

S = MachineState
MT = make_config(machinetypes={"mt": {"fizzle_seconds": 600, "heartbeat_file": "hb", "heartbeat_seconds": 300,
                                      "mb_per_processor": 1000}}).spaces["sp"].machinetypes["mt"]


def ended(ran: float, heartbeat_before_end: float | None = None, **extra: object):  # type: ignore[no-untyped-def]
    end = T0 + timedelta(seconds=60 + ran)
    beat = end - timedelta(seconds=heartbeat_before_end) if heartbeat_before_end is not None else None
    return rec("m", S.GONE, processors=4, started_at=T0 + timedelta(seconds=60), stopped_at=end, heartbeat_at=beat,
               cloud_id="uuid-1", **extra)


def test_a_machine_that_never_ran_or_fizzled_has_no_usage() -> None:
    assert usage(rec("m", S.GONE, stopped_at=T0), MT) is None
    assert usage(ended(599), MT) is None
    assert usage(ended(600), MT) is not None
    assert usage(ended(3600), None) is None  # its machinetype is gone from the configuration: no cut-off known


def test_usage_is_wall_time_from_first_seen_running_to_the_stop() -> None:
    u = usage(ended(3600, hs06=40.0), MT)
    assert u is not None
    assert (u.wall_seconds, u.cpu_seconds, u.processors, u.hs06_per_processor) == (3600, 3600, 4, 10.0)
    assert (u.local_id, u.memory_kb, u.month) == ("uuid-1", 4 * 1000 * 1024, "2026-01")
    assert usage(ended(3600), MT).hs06_per_processor == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize(("before_end", "wall"), [(10, 3600), (300, 3600), (2000, 3600 - 2000 + 300)])
def test_the_end_is_no_later_than_the_heartbeats_vouch_for(before_end: float, wall: int) -> None:
    u = usage(ended(3600, heartbeat_before_end=before_end), MT)
    assert u is not None and u.wall_seconds == wall


def test_a_heartbeat_before_the_start_never_makes_time_negative() -> None:
    record = ended(3600, heartbeat_before_end=10_000)
    assert end_of(record, MT) == record.started_at


def test_months_add_machines_once_each() -> None:
    a, b = usage(ended(3600), MT), usage(ended(7200, hs06=8.0), MT)
    assert a is not None and b is not None
    month = add(add(None, a), b)
    assert (month.machines, month.wall_seconds, month.processors, month.hs06_per_processor) == (2, 10800, 8, 2.0)


def test_apel_names_as_the_old_vcycle() -> None:
    space = make_config(space={"gocdb_sitename": "UKI-NORTHGRID-MAN-HEP"}).spaces["sp"]
    assert apel.site_name(space) == "UKI-NORTHGRID-MAN-HEP"
    bare = make_config().spaces["sp"]
    assert apel.site_name(bare) == "sp"
    assert apel.global_user_name("cloud.example.org") == "/DC=org/DC=example/DC=cloud"


@pytest.mark.parametrize(("fqan", "vo"), [
    ("/lhcb/Role=pilot/Capability=NULL", ("lhcb", "/lhcb", "Role=pilot")),
    ("/atlas/uk/Role=production", ("atlas", "/atlas/uk", "Role=production")),
    ("/dteam", ("dteam", "/dteam", None)),
    ("belle", ("belle", None, None)),
    ("/lhcb/Role=pilot;/lhcb", ("lhcb", "/lhcb", "Role=pilot")),
])
def test_the_vo_of_an_fqan(fqan: str, vo: tuple[str, str | None, str | None]) -> None:
    assert apel.vo_of(fqan) == vo


def test_messages_hold_at_most_records_per_message() -> None:
    records = [f"Site: s\nLocalJobId: {i}\n" for i in range(apel.RECORDS_PER_MESSAGE + 1)]
    found = apel.messages(apel.JOB_HEADER, records)
    assert [m.count("%%") for m in found] == [apel.RECORDS_PER_MESSAGE, 1]
    assert all(m.startswith(apel.JOB_HEADER + "\n") and m.endswith("%%\n") for m in found)
    assert apel.messages(apel.JOB_HEADER, []) == []

"""Interruption notices (vcycle/core/interruptions.py): what the clouds' metadata services say, how sync keeps a
notice and does not count the stop as an abort (unless most machines are interrupted), how the planner drains
the machine and cools its offering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vctest import T0, cloud, make_config, rec

from vcycle.core import interruptions
from vcycle.core.model import Action, CloudStatus, Heartbeat, SpaceSnapshot
from vcycle.core.planner import plan
from vcycle.core.states import MachineState
from vcycle.core.sync import sync

S = MachineState
NOW = T0 + timedelta(hours=2)
CONFIG = make_config(limit=100, settings={"max_create_fraction": 1},
                     machinetypes={"mt": {"fizzle_seconds": 600, "backoff_seconds": 900,
                                          "flavor_names": "m5.large c5.large"}})
SPACE = CONFIG.spaces["sp"]

# The bodies the metadata services answer, as AWS and Microsoft document them.
SPOT = {"action": "terminate", "time": "2026-01-01T14:02:00Z"}
REBALANCE = {"noticeTime": "2026-01-01T13:58:00Z"}
AZURE = {"DocumentIncarnation": 2, "Events": [
    {"EventId": "602d9444-d2cd-49c7-8624-8643e7171297", "EventType": "Freeze", "ResourceType": "VirtualMachine",
     "Resources": ["other"], "EventStatus": "Scheduled", "NotBefore": "Thu, 01 Jan 2026 14:10:00 GMT",
     "Description": "", "EventSource": "Platform", "DurationInSeconds": 5},
    {"EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123", "EventType": "Preempt", "ResourceType": "VirtualMachine",
     "Resources": ["vcycle-mt-1"], "EventStatus": "Scheduled", "NotBefore": "Thu, 01 Jan 2026 14:00:30 GMT",
     "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}]}


@pytest.mark.parametrize(("report", "kind", "action", "at", "words"), [
    ({"kind": "spot", "notice": SPOT}, "spot", "terminate", datetime(2026, 1, 1, 14, 2, tzinfo=UTC),
     "EC2 spot interruption notice: terminate at 2026-01-01T14:02:00Z"),
    ({"kind": "spot", "notice": {"action": "stop"}}, "spot", "stop", None, "EC2 spot interruption notice: stop"),
    ({"kind": "rebalance", "notice": REBALANCE}, "rebalance", "rebalance", datetime(2026, 1, 1, 13, 58, tzinfo=UTC),
     "EC2 rebalance recommendation at 2026-01-01T13:58:00Z"),
    ({"kind": "preempt", "notice": AZURE}, "preempt", "preempt", datetime(2026, 1, 1, 14, 0, 30, tzinfo=UTC),
     "Azure Scheduled Event Preempt at 2026-01-01T14:00:30Z"),
])
def test_each_cloud_notice_is_read(report: object, kind: str, action: str, at: datetime | None, words: str) -> None:
    notice = interruptions.parse(report)
    assert (notice.kind, notice.action, notice.at) == (kind, action, at)
    assert notice.describe().startswith(words)


@pytest.mark.parametrize(("report", "words"), [
    ([], "expected"),
    ({"kind": "spot"}, "must be the JSON object"),
    ({"kind": "flood", "notice": {}}, "unknown kind 'flood'"),
    ({"kind": "spot", "notice": {"action": "explode"}}, "terminate, stop or hibernate"),
    ({"kind": "spot", "notice": {"action": "terminate", "time": "soon"}}, "not an ISO 8601 time"),
    ({"kind": "preempt", "notice": {"Events": [AZURE["Events"][0]]}}, "no Preempt event"),  # type: ignore[index]
    ({"kind": "preempt", "notice": {"Events": [{"EventType": "Preempt", "NotBefore": "never"}]}}, "RFC 1123"),
    ({"kind": "spot", "notice": SPOT, "more": 1}, "expected"),
])
def test_anything_else_is_refused_with_what_is_wrong(report: object, words: str) -> None:
    with pytest.raises(interruptions.BadNotice, match=words):
        interruptions.parse(report)


def interrupted(name: str, ago: int = 10, flavor: str = "m5.large", state: S = S.RUNNING, **extra: object):  # type: ignore[no-untyped-def]
    return rec(name, state, flavor=flavor, interruption="EC2 spot interruption notice: terminate",
               interrupted_at=NOW - timedelta(seconds=ago), **{"started_at": T0, **extra})


def test_sync_keeps_the_first_notice_with_the_machine() -> None:
    machine = rec("m", S.RUNNING, started_at=T0)
    beat = Heartbeat("m", interruption="EC2 spot interruption notice: terminate", interruption_at=NOW)
    result = sync([machine], [cloud("m", CloudStatus.RUNNING)], {"m": beat}, NOW, space=SPACE,
                  settings=CONFIG.settings)
    (record,) = result.records
    assert (record.interruption, record.interrupted_at) == ("EC2 spot interruption notice: terminate", NOW)
    again = sync(result.records, [cloud("m", CloudStatus.RUNNING)],
                 {"m": Heartbeat("m", interruption="later", interruption_at=NOW + timedelta(seconds=5))},
                 NOW + timedelta(seconds=5), space=SPACE, settings=CONFIG.settings)
    assert again.records[0].interrupted_at == NOW  # the first notice stays


@pytest.mark.parametrize("how", ["vanished", "stopped", "stopped with an abort code"])
def test_an_interrupted_machine_ending_young_is_no_abort(how: str) -> None:
    """Young enough to be an abort by fizzle_seconds, and with a 500 shutdown message: still none."""
    young = interrupted("m", ago=30, state=S.DRAINING, started_at=NOW - timedelta(seconds=60),
                        shutdown_code=500 if "code" in how else None)
    others = [rec(f"ok{i}", S.RUNNING, started_at=T0) for i in range(3)]
    listed = [cloud(r.name, CloudStatus.RUNNING) for r in others]
    if how != "vanished":
        listed.append(cloud("m", CloudStatus.STOPPED))
    result = sync([young, *others], listed, {}, NOW, space=SPACE, settings=CONFIG.settings)
    assert result.backoffs == {} and result.aborted == ()
    assert result.vanished == () and result.warnings == ()
    if how == "vanished":
        assert "after its interruption notice" in result.records[0].reason


def test_interruptions_of_most_machines_in_an_hour_count_as_aborts() -> None:
    """Over max_interruption_fraction (0.5) of the machinetype's machines of the last hour: a spot price
    that will not hold, worth backing off from."""
    records = [interrupted(f"i{i}", ago=600 + i) for i in range(3)] + [rec("ok", S.RUNNING, started_at=T0)]
    listed = [cloud(r.name, CloudStatus.RUNNING) for r in records[1:]]
    result = sync(records, listed, {}, NOW, space=SPACE, settings=CONFIG.settings)
    assert result.aborted == ("i0",)
    assert "3 of 4 machines of mt were interrupted in the last hour, over max_interruption_fraction 0.5" in \
        result.backoffs["mt"].reason


def test_the_stores_count_of_gone_machines_decides_the_storm() -> None:
    """One interrupted machine ends among many healthy ones; the store counts 9 of 10 of the last hour
    interrupted (the others GONE, not in the records sync is given): an abort."""
    records = [interrupted("i", ago=60)] + [rec(f"ok{i}", S.RUNNING, started_at=T0) for i in range(5)]
    listed = [cloud(r.name, CloudStatus.RUNNING) for r in records[1:]]
    calm = sync(records, listed, {}, NOW, space=SPACE, settings=CONFIG.settings)
    assert calm.aborted == ()
    stormy = sync(records, listed, {}, NOW, space=SPACE, settings=CONFIG.settings, interrupted={"mt": (9, 10)})
    assert stormy.aborted == ("i",) and "9 of 10 machines" in stormy.backoffs["mt"].reason


def snapshot(*records) -> SpaceSnapshot:  # type: ignore[no-untyped-def]
    return SpaceSnapshot("sp", tuple(records), flavors={"m5.large": 1, "c5.large": 1})


def test_the_planner_drains_an_interrupted_machine_whatever_the_budget() -> None:
    machines = [interrupted(f"i{i}") for i in range(5)] + [rec("ok", S.RUNNING, started_at=T0)]
    result = plan(snapshot(*machines), {}, CONFIG, NOW)
    assert sorted(d.machine for d in result.drains) == [f"i{i}" for i in range(5)]
    drains = [d for d in result.decisions if d.action is Action.DRAIN]
    assert {d.rule for d in drains} == {"interrupted"}
    assert drains[0].reason == "interrupted: EC2 spot interruption notice: terminate"
    assert not result.deletes  # nothing is killed for it


def test_an_interrupted_machine_past_its_wallclock_is_deleted_not_drained() -> None:
    late = interrupted("late", shutdown_at=NOW - timedelta(seconds=1))
    result = plan(snapshot(late), {}, CONFIG, NOW)
    assert [d.machine for d in result.deletes] == ["late"] and not result.drains


def test_a_notice_cools_the_offering_and_the_next_one_is_taken() -> None:
    hot = interrupted("i", ago=42)
    result = plan(snapshot(hot), {}, CONFIG, NOW)
    assert result.creates and {c.flavor for c in result.creates} == {"c5.large"}  # the next offering
    both = plan(snapshot(hot, interrupted("j", ago=100, flavor="c5.large")), {}, CONFIG, NOW)
    assert not both.creates
    (hold,) = [d for d in both.decisions if d.rule == "offering_cooldown"]
    assert "i on flavor m5.large had an interruption notice 42s ago (offering_cooldown_seconds 180)" in hold.reason
    cold = plan(snapshot(interrupted("i", ago=180)), {}, CONFIG, NOW)
    assert {c.flavor for c in cold.creates} == {"m5.large"}
    assert not [d for d in cold.decisions if d.rule == "offering_cooldown"]


def test_another_flavor_of_the_machinetype_is_not_cooled() -> None:
    """m5.large, the first flavor, is cooled by a notice on c5.large? No: only c5.large is."""
    result = plan(snapshot(interrupted("i", flavor="c5.large")), {}, CONFIG, NOW)
    assert result.creates and {c.flavor for c in result.creates} == {"m5.large"}


def test_a_notice_cools_the_spot_offering_of_its_zone_not_on_demand_nor_the_other_zone() -> None:
    """With zones and capacity types named, a notice on a spot machine in zone-a cools spot in zone-a alone: the
    next machines are spot in zone-b, and on-demand in zone-a is their fallback."""
    config = make_config(limit=100, settings={"max_create_fraction": 1}, machinetypes={"mt": {
        "fizzle_seconds": 600, "backoff_seconds": 900, "flavor_names": "m5.large", "zones": "zone-a zone-b",
        "capacity_types": "spot on-demand"}})
    result = plan(snapshot(interrupted("i", ago=42, zone="zone-a")), {}, config, NOW)
    assert result.creates and {c.offering.key for c in result.creates} == {"m5.large@zone-b/spot"}
    assert [o.key for o in result.creates[0].fallbacks] == ["m5.large@zone-a/on-demand", "m5.large@zone-b/on-demand"]
    assert "on m5.large@zone-b/spot (m5.large@zone-a/spot cooling)" in result.creates[0].reason
    either = plan(snapshot(interrupted("i", ago=42, zone="zone-a"), interrupted("j", ago=42, zone="zone-b")), {},
                  config, NOW)
    assert {c.offering.key for c in either.creates} == {"m5.large@zone-a/on-demand"}


def test_a_notice_in_a_zone_vcycle_does_not_name_cools_the_flavor_everywhere() -> None:
    """Without zones the cloud chose zone-a, and may choose it again: the flavor cools (as before zones)."""
    result = plan(snapshot(interrupted("i", zone="zone-a")), {}, CONFIG, NOW)
    assert {c.flavor for c in result.creates} == {"c5.large"}


@given(st.lists(st.tuples(st.integers(0, 7200), st.booleans(), st.integers(-1, 7200)), max_size=30),
       st.floats(0.0, 1.0))
def test_a_storm_is_said_only_past_the_fraction(machines: list[tuple[int, bool, int]], fraction: float) -> None:
    """Machines stopped before the hour (stopped ago > 3600) do not count; -1: still running."""
    records = [rec(f"m{i}", S.RUNNING, started_at=T0,
                   interrupted_at=NOW - timedelta(seconds=ago) if hit else None, interruption="x" if hit else None,
                   stopped_at=NOW - timedelta(seconds=stop) if stop >= 0 else None)
               for i, (ago, hit, stop) in enumerate(machines)]
    ran = [(ago, hit) for ago, hit, stop in machines if stop <= 3600]
    hits = sum(1 for ago, hit in ran if hit and ago <= 3600)
    counts = interruptions.tally(records, "mt", NOW)
    assert counts == (hits, len(ran))
    why = interruptions.storm("mt", counts, fraction)
    assert (why is not None) == (hits >= interruptions.STORM_MACHINES and hits > fraction * len(ran))

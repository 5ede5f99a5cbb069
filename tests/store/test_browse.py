"""The status page's reads: machines paged and filtered by the database, heartbeat ages binned by it, one
machine's heartbeat, a space's last reports; on SQLite and a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from vctest import T0, rec

from vcycle.core.model import CycleReport, Heartbeat
from vcycle.core.states import MachineState
from vcycle.store import Store
from vcycle.store.browse import AGE_LABELS, Browse
from vcycle.store.series import Series

S = MachineState


def _fill(store: Store) -> None:
    records = [rec(f"vm-{i:03d}", S.RUNNING if i % 3 else S.STOPPED, mt="lhcb" if i % 2 else "atlas",
                   created=T0 + timedelta(minutes=i), zone="nova-50%" if i == 7 else "nova",
                   heartbeat_at=T0 + timedelta(minutes=i)) for i in range(120)]
    store.write("sp", store.load("sp").version, records)


def test_machines_are_paged_newest_first_and_counted_with_their_filters(store: Store) -> None:
    _fill(store)
    browse = Browse(store)
    first = browse.machines(limit=50)
    assert first.total == 120 and [r.name for r in first.records[:2]] == ["vm-119", "vm-118"]
    last = browse.machines(offset=100, limit=50)
    assert [r.name for r in last.records] == [f"vm-{i:03d}" for i in range(19, -1, -1)]
    stopped = browse.machines(state="stopped", limit=500)
    assert stopped.total == 40 and {r.state for r in stopped.records} == {S.STOPPED}
    assert browse.machines(text="LHCB", state="running", limit=500).total == 40  # odd i, not a multiple of 3
    assert browse.machines(space="elsewhere").total == 0
    # LIKE's wildcards are taken literally: '50%' matches the one zone, '_' matches no name
    assert [r.name for r in browse.machines(text="50%").records] == ["vm-007"]
    assert browse.machines(text="_").total == 0
    assert browse.machines(text="vm-01").total == 10


def test_heartbeat_ages_are_binned_for_running_machines_only(store: Store) -> None:
    now = T0 + timedelta(hours=10)
    beats = {"a": now - timedelta(seconds=30), "b": now - timedelta(seconds=200), "c": now - timedelta(minutes=10),
             "d": now - timedelta(minutes=30), "e": now - timedelta(hours=2), "f": now - timedelta(hours=9),
             "g": None}
    records = [rec(n, S.RUNNING, heartbeat_at=at) for n, at in beats.items()]
    records.append(rec("h", S.STOPPED, heartbeat_at=now))  # not running: not counted
    records.append(rec("i", S.DRAINING, heartbeat_at=now - timedelta(seconds=5)))
    store.write("sp", store.load("sp").version, records)
    ages = Browse(store).heartbeat_ages(now)
    assert [label for label, _ in ages] == list(AGE_LABELS)
    assert [n for _, n in ages] == [2, 1, 1, 1, 1, 1, 1]
    assert sum(n for _, n in Browse(store).heartbeat_ages(now, space="other")) == 0


def test_a_machines_heartbeat_and_the_last_reports(store: Store) -> None:
    store.write("sp", store.load("sp").version, [rec("m1", S.RUNNING)])
    store.put_heartbeats([("sp", Heartbeat("m1", T0, address="10.0.0.5", detail='{"load": 1.5}'))])
    browse = Browse(store)
    beat = browse.heartbeat("sp", "m1")
    assert beat is not None and beat.address == "10.0.0.5" and beat.detail == '{"load": 1.5}'
    assert browse.heartbeat("sp", "m2") is None
    store.add_reports([CycleReport("sp", T0 + timedelta(minutes=i), T0 + timedelta(minutes=i, seconds=3), i != 2,
                                   warnings=(f"w{i}",), series={"mt": {"running": i}}) for i in range(5)])
    reports = browse.reports("sp", 3)
    assert [r["warnings"] for r in reports] == [["w4"], ["w3"], ["w2"]] and reports[2]["ok"] is False
    assert reports[0]["started_at"] == T0 + timedelta(minutes=4)
    every = Series(store).read_all(T0 + timedelta(minutes=1))
    assert list(every) == ["sp"] and [p[1]["mt"]["running"] for p in every["sp"]] == [1, 2, 3, 4]


def test_points_older_than_a_day_are_merged_one_per_ten_minutes(store: Store) -> None:
    start = T0.replace(minute=0)  # on a ten-minute boundary
    store.add_reports([CycleReport("sp", start + timedelta(minutes=i), start + timedelta(minutes=i), True,
                                   series={"mt": {"running": i, "creates": 1}}) for i in range(30)])
    series = Series(store)
    assert series.compact("sp", start + timedelta(minutes=25)) == 18  # two buckets of ten points, one row each
    points = series.read("sp", start)
    assert [p[0] for p in points[:3]] == [start, start + timedelta(minutes=10), start + timedelta(minutes=20)]
    assert points[0][1] == {"mt": {"running": 4.5, "creates": 10}, "": {"points": 10}}
    assert len(points) == 12 and "" not in points[2][1]  # the bucket not complete yet is left as it was
    assert series.compact("sp", start + timedelta(minutes=25)) == 0  # merged already
    late = start + timedelta(minutes=3, seconds=30)  # a point that came after its bucket was merged
    store.add_reports([CycleReport("sp", late, late, True, series={"mt": {"running": 100}})])
    assert series.compact("sp", start + timedelta(minutes=25)) == 1
    first = series.read("sp", start)[0][1]
    assert first[""] == {"points": 11} and first["mt"]["running"] == round((45 + 100) / 11, 2)


def test_the_status_counts_the_machines_a_configuration_change_left_behind(store: Store) -> None:
    from vctest import make_config

    from vcycle.store.status import collect

    old = make_config(machinetypes={"mt": {"root_image": "image:a"}}).spaces["sp"].machinetypes["mt"].made_by
    config = make_config(machinetypes={"mt": {"root_image": "image:b"}})
    current = config.spaces["sp"].machinetypes["mt"].made_by
    store.write("sp", store.load("sp").version, [rec("a", S.RUNNING, made_by=old), rec("b", S.DRAINING, made_by=old),
                                                 rec("c", S.RUNNING, made_by=current), rec("d", S.RUNNING)])
    found = collect(config, store, T0)["spaces"]["sp"]
    assert found["drifted"] == {"mt": {"machines": 2, "image": 2}}
    assert found["machinetypes"]["mt"] == {"draining": 1, "running": 3}  # counted across what made them

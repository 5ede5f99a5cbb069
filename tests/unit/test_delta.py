"""The incremental sync (core/delta.py) against the full one, over random histories of a space.

Each history is a run of cycles. Between cycles the cloud, the machines, the
store and the batch system change as they do for real: machines are
requested, boot, stop, vanish and are deleted, heartbeats and shutdown
messages arrive, an SDK parses the whole listing anew, another writer reloads
the store, foreign and untagged machines come and go, the batch system's word
changes, and time passes. Every cycle both passes get the same inputs; their
results must be equal, record for record and change for change, and so must
the plans made from them.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vctest import T0, cloud, config_text, load_text, rec

from vcycle.core import counts, delta
from vcycle.core.model import CloudMachine, CloudStatus, Demand, Heartbeat, MachineRecord, SpaceSnapshot
from vcycle.core.planner import plan
from vcycle.core.states import MachineState
from vcycle.core.sync import SyncResult, sync

S = MachineState
CONFIG = load_text(config_text(
    limit=30,
    settings={"request_timeout_seconds": 300, "deleting_timeout_seconds": 400},
    machinetypes={
        "alpha": {"target_share": 2, "heartbeat_file": "hb", "heartbeat_seconds": 600, "fizzle_seconds": 200},
        "beta": {"target_share": 1, "max_wallclock_seconds": 3000},
    },
))
SPACE = CONFIG.spaces["sp"]
NAMES = [f"m{i}" for i in range(12)]
STATUSES = [CloudStatus.STARTING, CloudStatus.RUNNING, CloudStatus.STOPPED, CloudStatus.FAILED,
            CloudStatus.DELETING, CloudStatus.DELETED, CloudStatus.UNKNOWN]

events = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(NAMES), st.sampled_from(["alpha", "beta"]),
              st.sampled_from([None, 10.0, 12.5, 0.1, 3])),
    st.tuples(st.just("appear"), st.sampled_from(NAMES), st.sampled_from(STATUSES)),
    st.tuples(st.just("status"), st.sampled_from(NAMES), st.sampled_from(STATUSES)),
    st.tuples(st.just("vanish"), st.sampled_from(NAMES)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("operator"), st.sampled_from(NAMES)),
    st.tuples(st.just("beat"), st.sampled_from(NAMES)),
    st.tuples(st.just("shutdown"), st.sampled_from(NAMES), st.sampled_from(["200 Success", "500 Failed"])),
    st.tuples(st.just("untagged"), st.sampled_from(NAMES)),
    st.tuples(st.just("foreign"), st.integers(0, 3), st.integers(1, 4)),
    st.tuples(st.just("unforeign"), st.integers(0, 3)),
    st.tuples(st.just("register"), st.sampled_from(NAMES), st.sampled_from([None, True, False])),
    st.tuples(st.just("batch"), st.booleans()),
    st.tuples(st.just("twice"), st.sampled_from(NAMES)),
    st.tuples(st.just("reparse")),
    st.tuples(st.just("reload")),
    st.tuples(st.just("error")),
)
cycles = st.lists(st.tuples(st.lists(events, max_size=5), st.integers(0, 900)), min_size=10, max_size=40)


class Space:
    """A space's cloud, store, heartbeats and batch system, changed by events between cycles."""

    def __init__(self) -> None:
        self.now = T0
        self.cloud: dict[str, CloudMachine] = {}
        self.foreign: dict[int, CloudMachine] = {}
        self.twice: list[CloudMachine] = []
        self.records: dict[str, MachineRecord] = {}
        self.beats: dict[str, Heartbeat] = {}
        self.registered: dict[str, bool] | None = None
        self.backoffs: dict = {}  # type: ignore[type-arg]
        self.seen: delta.Seen | None = None
        self.given: tuple[tuple[MachineRecord, ...], dict[str, Heartbeat]] | None = None  # as the store hands out

    def handed(self) -> tuple[tuple[MachineRecord, ...], dict[str, Heartbeat]]:
        """The records and heartbeats as the store hands them out: the same objects again while nothing changed,
        new ones (never changed later) when something did."""
        records, beats = self.given or ((), {})
        if self.given is None or list(records) != list(self.records.values()) or any(
                a is not b for a, b in zip(records, self.records.values(), strict=True)):
            records = tuple(self.records.values())
        if beats != self.beats or any(beats[n] is not b for n, b in self.beats.items()):
            beats = dict(self.beats)
        self.given = records, beats
        return records, beats

    def apply(self, event: tuple) -> None:  # type: ignore[type-arg]  # noqa: C901 - one branch per event
        kind, *args = event
        if kind == "request" and args[0] not in self.records:
            self.records[args[0]] = rec(args[0], S.REQUESTED, mt=args[1], created=self.now,
                                        shutdown_at=self.now + timedelta(seconds=3000),
                                        hs06=args[2] if len(args) > 2 else None)
        elif kind == "appear" and args[0] in self.records and args[0] not in self.cloud:
            record = self.records[args[0]]
            self.cloud[args[0]] = dataclasses.replace(cloud(args[0], args[1], mt=record.machinetype),
                                                      id=record.cloud_id or "id-" + args[0])
        elif kind == "status" and args[0] in self.cloud:
            self.cloud[args[0]] = dataclasses.replace(self.cloud[args[0]], status=args[1])
        elif kind == "vanish":
            self.cloud.pop(args[0], None)
        elif kind in ("delete", "operator") and args[0] in self.records:
            record = self.records[args[0]]
            if kind == "delete" and record.state in (S.STARTING, S.RUNNING, S.STOPPED, S.FAILED):
                self.records[args[0]] = dataclasses.replace(record, state=S.DELETING, last_delete_at=self.now,
                                                            delete_attempts=record.delete_attempts + 1)
            elif kind == "operator":
                self.records[args[0]] = dataclasses.replace(record, delete_requested="by hand")
        elif kind == "beat":
            self.beats[args[0]] = Heartbeat(args[0], self.now)
        elif kind == "shutdown":
            self.beats[args[0]] = Heartbeat(args[0], self.now, args[1], self.now)
        elif kind == "untagged":
            self.cloud[args[0]] = cloud(args[0], CloudStatus.RUNNING, mt="alpha")  # tagged, maybe no record
        elif kind == "foreign":
            self.foreign[args[0]] = cloud(f"f{args[0]}", CloudStatus.RUNNING, owned=False, processors=args[1])
        elif kind == "unforeign":
            self.foreign.pop(args[0], None)
        elif kind == "register" and self.registered is not None:
            if args[1] is None:
                self.registered.pop(args[0], None)
            else:
                self.registered[args[0]] = args[1]
        elif kind == "batch":
            self.registered = {} if args[0] else None
        elif kind == "twice" and args[0] in self.cloud:
            self.twice = [dataclasses.replace(self.cloud[args[0]], detail="listed twice")]
        elif kind == "reparse":  # an SDK parses every machine anew: equal objects, not the same ones
            self.cloud = {n: dataclasses.replace(m) for n, m in self.cloud.items()}
            self.foreign = {n: dataclasses.replace(m) for n, m in self.foreign.items()}
        elif kind == "reload":  # another writer: the store reads every record anew
            self.records = {n: dataclasses.replace(r) for n, r in self.records.items()}
        elif kind == "error":  # a failed cycle: the next pass is a full one
            self.seen = None

    def cycle(self, every: int) -> tuple[SyncResult, SyncResult]:
        records, beats = self.handed()
        listing = [*self.cloud.values(), *self.foreign.values(), *self.twice]
        self.twice = []
        kwargs = {"space": SPACE, "settings": CONFIG.settings, "backoffs": self.backoffs,
                  "registered": None if self.registered is None else dict(self.registered),
                  "listed_at": self.now}
        full = sync(records, listing, beats, self.now, **kwargs)  # type: ignore[arg-type]
        fast, self.seen, _ = delta.sync_since(self.seen, records, listing, beats, self.now, every=every,
                                              **kwargs)  # type: ignore[arg-type]
        # what the store holds next: the records the pass gave out (the very objects), less the gone ones
        self.records = {r.name: r for r in fast.records if r.state is not S.GONE}
        self.backoffs = dict(fast.backoffs)
        return full, fast


def snapshot(result: SyncResult, seen: delta.Seen | None = None) -> SpaceSnapshot:
    return SpaceSnapshot("sp", result.records, result.foreign_processors, result.backoffs,
                         counts=seen.counts if seen is not None else None)


DEMAND = {"alpha": Demand(idle_jobs=3, running_jobs=1)}


def run(history: list[tuple[list[tuple], int]], every: int) -> int:  # type: ignore[type-arg]
    """Both passes through a history; the number of cycles compared."""
    space = Space()
    for cycle, (happened, seconds) in enumerate(history):
        for event in happened:
            space.apply(event)
        full, fast = space.cycle(every)
        assert fast == full, f"cycle {cycle}: the incremental pass differs from the full one"
        kept = space.seen.counts if space.seen is not None else None
        assert kept is not None and kept.records is fast.records
        assert kept.states == collections.Counter((r.machinetype, r.state) for r in full.records), f"cycle {cycle}"
        assert kept.made == collections.Counter((r.machinetype, r.made_by) for r in full.records)
        assert kept.noticed == {r.name for r in full.records if r.interruption or r.interrupted_at}
        for name in SPACE.machinetypes:  # the running machines' counts, as the planner would count them
            running = [r for r in full.records if r.machinetype == name and r.state is S.RUNNING]
            kind = kept.kinds[name]
            assert (kind.machines, kind.processors) == (len(running), sum(r.processors for r in running))
            assert kind.starts == sorted(r.started_at or r.created_at for r in running)
            assert kind.hs06.value() == math.fsum(r.hs06 or r.processors for r in running)
        assert kept.held == sum(r.processors for r in full.records
                                if r.state is S.RUNNING and r.machinetype in SPACE.machinetypes)
        assert kept.others | kept.running.keys() == {r.name for r in full.records}
        assert not kept.others & kept.running.keys()
        assert plan(snapshot(fast, space.seen), DEMAND, CONFIG, space.now) == plan(snapshot(full), DEMAND, CONFIG,
                                                                                  space.now), f"cycle {cycle}: plans"
        space.now += timedelta(seconds=seconds)
    return len(history)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cycles, st.sampled_from([2, 10, 1000]))
def test_the_incremental_pass_gives_the_full_pass_records_and_plan(history, every) -> None:  # type: ignore[no-untyped-def]
    assert run(history, every) == len(history)


def test_a_steady_space_looks_at_no_record_and_a_full_pass_comes_every_full_sync_cycles() -> None:
    space = Space()
    for i, name in enumerate(NAMES):
        space.apply(("request", name, "beta"))
        space.apply(("appear", name, CloudStatus.RUNNING if i % 2 else CloudStatus.STARTING))
    looked: list[int | None] = []
    for _ in range(12):
        records, beats = space.handed()
        listing = list(space.cloud.values())
        result, space.seen, count = delta.sync_since(space.seen, records, listing, beats, space.now, every=5,
                                                     space=SPACE, settings=CONFIG.settings)
        space.records = {r.name: r for r in result.records}
        looked.append(count)
        space.now += timedelta(seconds=60)
    assert looked == [None, 0, 0, 0, 0, None, 0, 0, 0, 0, None, 0]
    space.apply(("status", "m3", CloudStatus.STOPPED))
    space.apply(("beat", "m4"))
    records, beats = space.handed()
    result, space.seen, count = delta.sync_since(space.seen, records, list(space.cloud.values()), beats, space.now,
                                                 every=5, space=SPACE, settings=CONFIG.settings)
    assert count == 2
    assert {r.name for r in result.updated} == {"m3", "m4"}


def test_the_comparison_fails_on_a_planted_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the incremental pass forgets the clock (requests never listed are not given up): the
    comparison of the two passes finds it."""
    history = [([("request", "m1", "alpha")], 200), ([], 200), ([], 200), ([], 200)]
    assert run(history, 1000) == 4
    monkeypatch.setattr(delta, "CLOCKED", frozenset())
    with pytest.raises(AssertionError, match="differs from the full one"):
        run(history, 1000)


def test_the_plans_compared_fail_on_a_planted_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the counts never make a running machine due a look (its heartbeat never came): the comparison of
    the plans made with and without them finds it."""
    history = [([("request", "m1", "alpha"), ("appear", "m1", CloudStatus.RUNNING)], 300), ([], 300), ([], 300),
               ([], 300), ([], 300)]
    assert run(history, 1000) == 5
    monkeypatch.setattr(counts.Limits, "due", lambda self, record: None)
    with pytest.raises(AssertionError, match="plans"):
        run(history, 1000)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 64), st.floats(0, 1e6, allow_nan=False)), max_size=40), st.randoms())
def test_an_exact_sum_rounds_as_fsum_whatever_the_order_of_changes(values, chance) -> None:  # type: ignore[no-untyped-def]
    """What machines weigh, counted as they come and go (core/counts.py), is what the planner's own count of the
    same machines gives (math.fsum), to the last bit."""
    kept = counts.ExactSum()
    extra = [chance.random() * 100 for _ in range(5)]
    for value in [*values, *extra]:
        kept.add(value)
    chance.shuffle(extra)
    for value in extra:
        kept.add(value, -1)
    assert kept.value() == math.fsum(values)

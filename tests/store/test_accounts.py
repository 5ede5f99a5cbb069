"""The accounting ledger, on SQLite and on the real PostgreSQL server of this machine: each machine accounted once,
its usage summed into its month once, summaries due at most hourly while a month changes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from vcycle.core.model import new_record, transition
from vcycle.core.states import MachineState
from vcycle.core.usage import Usage
from vcycle.store import Store
from vcycle.store.accounts import Ledger

S = MachineState
T0 = datetime(2026, 3, 31, 20, 0, tzinfo=UTC)


def gone(name: str, ran: timedelta, end: datetime = T0, mt: str = "mt"):  # type: ignore[no-untyped-def]
    record = new_record(name=name, space="sp", machinetype=mt, state=S.REQUESTED, processors=2, now=end - ran,
                        request_id="req-" + name, reason="intent", manager="mgr")
    record = transition(record, S.RUNNING, end - ran, "running", started_at=end - ran)
    return transition(record, S.GONE, end, "vanished", stopped_at=end)


def used(record, hs06: float = 10.0) -> Usage:  # type: ignore[no-untyped-def]
    wall = int((record.stopped_at - record.started_at).total_seconds())
    return Usage(record.space, record.machinetype, record.name, record.name, record.processors, record.started_at,
                 record.stopped_at, wall, wall, hs06, 4096)


def test_machines_are_accounted_once_and_summed_into_their_month(store: Store) -> None:
    a, b = gone("a", timedelta(hours=2)), gone("b", timedelta(hours=5), T0 + timedelta(hours=6))  # b: in April
    store.write("sp", 0, [a, b])
    ledger = Ledger(store)
    assert [r.name for r in ledger.unaccounted("sp")] == ["a", "b"]
    assert ledger.account("sp", ["a", "b"], [used(a), used(b)], T0) == {"a", "b"}
    assert ledger.account("sp", ["a", "b"], [used(a), used(b)], T0) == set()  # a repeat adds nothing
    assert ledger.unaccounted("sp") == []
    months = {m.month: m for m in ledger.months("sp")}
    assert sorted(months) == ["2026-03", "2026-04"]
    assert (months["2026-03"].machines, months["2026-03"].wall_seconds, months["2026-03"].processors) == (1, 7200, 2)
    assert months["2026-04"].earliest_start == b.started_at
    c = gone("c", timedelta(hours=1), T0 + timedelta(minutes=30))
    store.write("sp", 1, [c])
    ledger.account("sp", ["c"], [used(c, hs06=12.0)], T0 + timedelta(minutes=30))
    march = {m.month: m for m in ledger.months("sp")}["2026-03"]
    assert (march.machines, march.wall_seconds, march.hs06_per_processor) == (2, 7200 + 3600, 12.0)
    assert (march.earliest_start, march.latest_start) == (a.started_at, c.started_at)


def test_only_gone_machines_are_accounted(store: Store) -> None:
    alive = transition(new_record(name="alive", space="sp", machinetype="mt", state=S.REQUESTED, processors=1,
                                  now=T0, request_id="r", reason="intent"), S.RUNNING, T0, "running", started_at=T0)
    store.write("sp", 0, [alive])
    assert Ledger(store).account("sp", ["alive", "unknown"], [], T0) == set()
    assert Ledger(store).months("sp") == []


def test_two_accountants_at_once_sum_a_machine_once(store: Store) -> None:
    records = [gone(f"m{i}", timedelta(hours=1)) for i in range(20)]
    store.write("sp", 0, records)
    results: list[set[str]] = []
    start = threading.Barrier(4)

    def account() -> None:
        start.wait()
        results.append(Ledger(store).account("sp", [r.name for r in records], [used(r) for r in records], T0))

    threads = [threading.Thread(target=account) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, 20]
    (month,) = Ledger(store).months("sp")
    assert (month.machines, month.wall_seconds) == (20, 20 * 3600)


def test_a_changing_month_is_due_at_once_and_then_at_most_hourly(store: Store) -> None:
    ledger = Ledger(store)
    first = gone("first", timedelta(hours=1))
    store.write("sp", 0, [first])
    ledger.account("sp", ["first"], [used(first)], T0)
    due = ledger.unsent("sp", T0 - timedelta(hours=1))
    assert [m.machines for m in due] == [1]  # never sent: due at once
    ledger.sent(due, T0)
    assert ledger.unsent("sp", T0 - timedelta(hours=1)) == []
    later = gone("later", timedelta(hours=1), T0 + timedelta(minutes=10))
    store.write("sp", 1, [later])
    ledger.account("sp", ["later"], [used(later)], T0 + timedelta(minutes=10))
    assert ledger.unsent("sp", T0 + timedelta(minutes=10) - timedelta(hours=1)) == []  # sent 10 minutes ago
    assert [m.machines for m in ledger.unsent("sp", T0 + timedelta(hours=1, minutes=1) - timedelta(hours=1))] == [2]


def test_the_mark_and_the_months_due_come_from_one_transaction(store: Store) -> None:
    """account_with_unsent: the months due include what its own mark just added; a repeat marks nothing and
    still reads them; and the mark and the read are one transaction (one begin, one commit)."""
    ledger = Ledger(store)
    first = gone("first", timedelta(hours=1))
    store.write("sp", 0, [first])
    begun = []
    real = store._begin

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        begun.append(kwargs.get("write", False))
        return real(*args, **kwargs)

    store._begin = counted  # type: ignore[method-assign]
    marked, due = ledger.account_with_unsent("sp", ["first"], [used(first)], T0, None, T0 - timedelta(hours=1))
    assert begun == [True]
    assert marked == {"first"}
    assert [(m.machinetype, m.machines) for m in due] == [("mt", 1)]
    ledger.sent(due, T0)
    again, due = ledger.account_with_unsent("sp", ["first"], [used(first)], T0 + timedelta(hours=2), None,
                                            T0 + timedelta(hours=1))
    assert again == set() and due == []  # marked before, and its month sent since it last changed
    assert ledger.account_with_unsent("sp", [], [], T0, None, T0) == (set(), [])


def test_machines_gone_before_the_upgrade_are_not_accounted_again(store_url: str) -> None:
    """Migration 0007 marks the machines already GONE accounted: no flood of old records on upgrade."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from vcycle.store.engine import MIGRATIONS

    engine = create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
    with engine.begin() as c:
        for name, state in (("old", "gone"), ("live", "running")):
            c.execute(text("INSERT INTO machines (space, name, machinetype, state, state_since, state_reason, "
                           "processors, created_at, request_id, manager, delete_attempts) VALUES ('sp', :n, 'mt', "
                           ":s, '2026-01-01T00:00:00.000000+00:00', 'x', 1, '2026-01-01T00:00:00.000000+00:00', "
                           "'r', 'mgr', 0)"), {"n": name, "s": state})
    engine.dispose()
    store = Store.open(store_url)
    try:
        assert Ledger(store).unaccounted("sp") == []
        (old,) = store.find("old")
        assert old.accounted_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert store.find("live")[0].accounted_at is None
    finally:
        store.close()

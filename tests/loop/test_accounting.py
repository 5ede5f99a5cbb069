"""Accounting through real cycles: APEL records in dirq queues, read back and checked field by field, and VacMon
messages received on a local UDP socket.

The APEL messages are parsed the way APEL's loader does (apel/db/loader/record_factory.py: a header line, records
split on ``%%``, ``Key: value`` lines) and checked against APEL's record definitions in
tests/fixtures/apel/records.json (JobRecord for the individual job records, CloudSummaryRecord for the summaries:
every key one the record accepts, the mandatory ones present and not null, the int, float and datetime fields
parsing as such, ServiceLevelType one APEL accepts, StartTime <= EndTime), and each value against the machine's
record. The VacMon messages are checked against the keys the old vcycle's shared.py sent
(tests/fixtures/apel/vacmon.json).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dirq.QueueSimple import QueueSimple
from vctest import config_text, load_text, plain_render

from vcycle.core.model import CloudStatus, CycleReport
from vcycle.core.sections import Config
from vcycle.errors import StoreError
from vcycle.loop.cycle import HOUSEKEEPING_SECONDS, SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.store.accounts import Ledger
from vcycle.testing import FakeClock, FakeConnector

FIXTURES = Path(__file__).parent.parent / "fixtures"
APEL = json.loads((FIXTURES / "apel" / "records.json").read_text())
VACMON = json.loads((FIXTURES / "apel" / "vacmon.json").read_text())
JOB, SUMMARY = "APEL-individual-job-message: v0.3", "APEL-cloud-summary-message: v0.4"


def accounting_config(tmp_path: Path, *, site: bool = True, space: dict[str, object] | None = None) -> Config:
    return load_text(config_text(
        limit=4, settings={"state_dir": tmp_path, "apel_outgoing_dir": tmp_path / "outgoing",
                           "max_create_fraction": 1},
        space={**({"gocdb_sitename": "UKI-TEST-SITE"} if site else {}), **(space or {})},
        machinetypes={"mt": {"min_processors": 2, "hs06_per_processor": 12.5, "accounting_fqan": "/lhcb/Role=pilot",
                             "fizzle_seconds": 600, "root_image": "image:cernvm4"}}))


def queue_messages(path: Path) -> list[str]:
    """Every message in a dirq QueueSimple, as ssmsend reads them (lock, get, unlock)."""
    if not path.exists():
        return []
    queue = QueueSimple(str(path))
    found = []
    name = queue.first()
    while name:
        if queue.lock(name):
            found.append(queue.get(name).decode("utf-8"))  # QueueSimple.get gives the bytes written
            queue.unlock(name)
        name = queue.next()
    return sorted(found)


def parse(message: str) -> tuple[str, list[dict[str, str]]]:
    """APEL's loader: the header, then the records split on %%, each a ``Key: value`` per line."""
    lines = message.strip().splitlines()
    header, body = lines[0], "\n".join(lines[1:])
    records = []
    for text in body.split("%%"):
        if text.strip():
            pairs = [line.split(":", 1) for line in text.strip().splitlines()]
            assert all(len(p) == 2 for p in pairs), text
            records.append({k.strip(): v.strip() for k, v in pairs})
    return header, records


def check_against_apel(header: str, record: dict[str, str]) -> None:
    """What APEL's Record.load_from_msg and _check_fields refuse, refused here too."""
    kind = APEL[header]
    assert set(record) <= set(kind["fields"]) | set(kind["ignored"]), set(record) - set(kind["fields"])
    for key in kind["mandatory"]:
        assert record.get(key, "").lower() not in ("", "none", "null"), key
    for key in set(kind["int"]) & set(record):
        int(record[key])
    for key in set(kind["float"]) & set(record):
        float(record[key])
    for key in set(kind["datetime"]) & set(record):
        datetime.fromtimestamp(int(record[key]), UTC)
    if "service_level_types" in kind:
        assert record["ServiceLevelType"].lower() in kind["service_level_types"]
        assert int(record["StartTime"]) <= int(record["EndTime"])


def lifetime(config: Config, store: Store, clock: FakeClock, cloud: FakeConnector,
             ran: dict[int, int]) -> tuple[SpaceContext, list[CycleReport]]:
    """Cycles in which the machines named by index in ``ran`` run that many seconds, then stop, until they are
    GONE; the context and the cycles' reports."""
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    reports = [run_cycle(ctx)]
    names = sorted(m.name for m in cloud.ours())
    clock.advance(60)
    reports.append(run_cycle(ctx))  # running from now
    for index, seconds in sorted(ran.items(), key=lambda i: i[1]):
        started = store.find(names[index])[0].started_at
        assert started is not None
        while clock() < started + timedelta(seconds=seconds):
            clock.advance(60)
            reports.append(run_cycle(ctx))
        cloud.set_status(names[index], CloudStatus.STOPPED, "SHUTOFF")
    for _ in range(3):
        clock.advance(60)
        reports.append(run_cycle(ctx))
    return ctx, reports


def test_machines_that_ran_are_accounted_once_in_apel_messages_apel_accepts(tmp_path: Path, store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    config = accounting_config(tmp_path)
    lifetime(config, store, clock, cloud, {0: 3600, 1: 120})  # the second fizzled: no record
    gone = {r.name: r for r in store.records("sp")}
    ran = [r for r in gone.values() if r.stopped_at and r.started_at
           and (r.stopped_at - r.started_at).total_seconds() >= 600]
    assert len(ran) == 1 and all(r.accounted_at is not None for r in gone.values() if r.state.value == "gone")
    outgoing = queue_messages(tmp_path / "outgoing")
    assert outgoing == queue_messages(tmp_path / "apel-archive")  # the archive keeps a copy of each
    parsed = [parse(m) for m in outgoing]
    jobs = [r for header, records in parsed if header == JOB for r in records]
    (job,) = jobs
    check_against_apel(JOB, job)
    machine = ran[0]
    assert machine.started_at is not None and machine.stopped_at is not None
    assert job == {
        "Site": "UKI-TEST-SITE", "SubmitHost": "sp/vcycle-mgr", "MachineName": machine.name, "Queue": "mt",
        "LocalJobId": machine.cloud_id, "LocalUserId": machine.name, "GlobalUserName": "/DC=sp",
        "FQAN": "/lhcb/Role=pilot",
        "WallDuration": str(int((machine.stopped_at - machine.started_at).total_seconds())),
        "CpuDuration": str(int((machine.stopped_at - machine.started_at).total_seconds())),
        "Processors": "2", "NodeCount": "1", "InfrastructureDescription": "APEL-VCYCLE", "InfrastructureType": "grid",
        "StartTime": str(int(machine.started_at.timestamp())), "EndTime": str(int(machine.stopped_at.timestamp())),
        "MemoryReal": str(2 * 2048 * 1024), "MemoryVirtual": str(2 * 2048 * 1024),
        "ServiceLevelType": "HEPSPEC", "ServiceLevel": "12.5"}
    assert int(job["WallDuration"]) >= 3600
    (summary,) = [r for header, records in parsed if header == SUMMARY for r in records]
    check_against_apel(SUMMARY, summary)
    assert summary == {
        "SiteName": "UKI-TEST-SITE", "CloudComputeService": "sp", "Month": "1", "Year": "2026",
        "GlobalUserName": "/DC=sp", "VO": "lhcb", "VOGroup": "/lhcb", "VORole": "Role=pilot", "Status": "completed",
        "CloudType": "vcycle (fake)", "ImageId": "image:cernvm4",
        "EarliestStartTime": str(int(machine.started_at.timestamp())),
        "LatestStartTime": str(int(machine.started_at.timestamp())), "WallDuration": job["WallDuration"],
        "CpuDuration": job["CpuDuration"], "BenchmarkType": "HEPSPEC", "Benchmark": "12.5", "NumberOfVMs": "1"}


def test_machines_ending_between_housekeeping_passes_are_accounted_from_the_cycle_s_own_records(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a housekeeping pass (every HOUSEKEEPING_SECONDS, and at start) reads the store's unaccounted
    machines; a cycle in which machines end accounts those it ended, and their records are the store's."""
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    real = Ledger.unaccounted
    read_at: list[datetime] = []

    def unaccounted(self: Ledger, space: str) -> Any:
        read_at.append(clock())
        return real(self, space)

    monkeypatch.setattr(Ledger, "unaccounted", unaccounted)
    start = clock()
    lifetime(accounting_config(tmp_path), store, clock, cloud, {0: 900, 1: 1500})
    gone = [r for r in store.records("sp") if r.state.value == "gone"]
    assert len(gone) == 2 and all(r.accounted_at is not None for r in gone)
    passes = {(t - start).total_seconds() for t in read_at}
    assert passes and all(s % HOUSEKEEPING_SECONDS == 0 for s in passes), passes
    between = [r for r in gone if r.accounted_at is not None
               and (r.accounted_at - start).total_seconds() % HOUSEKEEPING_SECONDS]
    assert between  # accounted in a cycle that read nothing back
    jobs = [r for h, records in map(parse, queue_messages(tmp_path / "outgoing")) if h == JOB for r in records]
    assert sorted(j["MachineName"] for j in jobs) == sorted(r.name for r in gone)
    for job in jobs:
        record = next(r for r in gone if r.name == job["MachineName"])
        assert record.started_at is not None and record.stopped_at is not None
        assert (job["StartTime"], job["EndTime"], job["LocalJobId"]) == (
            str(int(record.started_at.timestamp())), str(int(record.stopped_at.timestamp())), record.cloud_id)


def test_a_space_without_gocdb_sitename_is_archived_but_not_sent(tmp_path: Path, store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    lifetime(accounting_config(tmp_path, site=False, space={"processors_limit": 2}), store, clock, cloud, {0: 900})
    assert queue_messages(tmp_path / "outgoing") == []
    archived = [parse(m) for m in queue_messages(tmp_path / "apel-archive")]
    assert sorted(h for h, _ in archived) == sorted([JOB, SUMMARY])
    assert {r.get("Site", r.get("SiteName")) for _, records in archived for r in records} == {"sp"}


def test_a_queue_that_cannot_be_written_loses_nothing_and_is_tried_again(tmp_path: Path, store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    (tmp_path / "outgoing").write_text("a file where the queue should be")
    ctx, reports = lifetime(accounting_config(tmp_path, space={"processors_limit": 2}), store, clock, cloud,
                            {0: 900})
    assert [e.message[:24] for r in reports for e in r.errors if e.kind == "accounting"] == [
        "APEL records not written"]
    (waiting,) = Ledger(store).unaccounted("sp")
    assert store.purge("sp", clock() + timedelta(days=30)) == 0  # kept until accounted
    (tmp_path / "outgoing").unlink()
    clock.advance(600)  # the next housekeeping pass takes it up
    report = run_cycle(ctx)
    assert report.ok, report.errors
    assert Ledger(store).unaccounted("sp") == []
    (job,) = [r for h, records in map(parse, queue_messages(tmp_path / "outgoing")) if h == JOB for r in records]
    assert job["MachineName"] == waiting.name
    (month,) = Ledger(store).months("sp")
    assert month.machines == 1


def test_a_crash_before_the_mark_sends_the_record_again_but_sums_it_once(tmp_path: Path, store: Store,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    real = Ledger.account_with_unsent
    calls = []

    def lost(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise StoreError("the store went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "account_with_unsent", lost)
    ctx, _ = lifetime(accounting_config(tmp_path, space={"processors_limit": 2}), store, clock, cloud, {0: 900})
    clock.advance(600)
    run_cycle(ctx)
    jobs = [r for h, records in map(parse, queue_messages(tmp_path / "outgoing")) if h == JOB for r in records]
    assert len(jobs) == 2 and jobs[0] == jobs[1]  # APEL's server keeps one record per job: a repeat replaces
    (month,) = Ledger(store).months("sp")
    assert (month.machines, month.wall_seconds) == (1, int(jobs[0]["WallDuration"]))
    assert Ledger(store).unaccounted("sp") == []


def test_a_month_summary_is_sent_again_when_it_changes_at_most_hourly(tmp_path: Path, store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    ctx, _ = lifetime(accounting_config(tmp_path, space={"processors_limit": 4}), store, clock, cloud,
                      {0: 700, 1: 1300})
    summaries = [r for h, records in map(parse, queue_messages(tmp_path / "outgoing")) if h == SUMMARY
                 for r in records]
    assert [s["NumberOfVMs"] for s in summaries] == ["1"]  # the second machine ended within the hour
    for _ in range(60):
        clock.advance(60)
        run_cycle(ctx)
    summaries = [r for h, records in map(parse, queue_messages(tmp_path / "outgoing")) if h == SUMMARY
                 for r in records]
    assert sorted(s["NumberOfVMs"] for s in summaries) == ["1", "2"]
    assert sorted(int(s["WallDuration"]) for s in summaries)[-1] >= 700 + 1300


def test_vacmon_messages_carry_the_old_vcycles_fields(tmp_path: Path, store: Store) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # every listener gets every message
    other.bind(("127.0.0.1", 0))
    other.settimeout(5)
    port, second = listener.getsockname()[1], other.getsockname()[1]
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    try:
        config = accounting_config(tmp_path, space={"processors_limit": 2,
                                                    "vacmon_hostport": f"127.0.0.1:{port} localhost:{second}"})
        lifetime(config, store, clock, cloud, {0: 900})
        received = []
        listener.settimeout(0.5)
        while True:
            try:
                received.append(json.loads(listener.recv(65536)))
            except TimeoutError:
                break
        assert json.loads(other.recv(65536))["message_type"] == "factory_status"
    finally:
        listener.close()
        other.close()
    kinds = {m["message_type"] for m in received}
    assert kinds == {"factory_status", "machinetype_status", "machine_status"}
    for message in received:
        shape = VACMON[message["message_type"]]
        assert set(shape["always"]) <= set(message) <= set(shape["always"]) | set(shape["optional"]), message
        assert (message["space"], message["site"], message["factory"]) == ("sp", "UKI-TEST-SITE", "mgr")
        assert message["vacquery_version"] == "VacQuery 01.02" and message["daemon_version"].startswith("Vcycle ")
    running = [m for m in received if m["message_type"] == "factory_status" and m["running_machines"]]
    assert running and running[0]["running_processors"] == 2 and running[0]["max_processors"] == 2
    assert running[0]["running_hs06"] == 25.0 and running[0]["mem_total_kb"] > 0
    (ended,) = [m for m in received if m["message_type"] == "machine_status"]
    (record,) = [r for r in store.records("sp") if r.name == ended["machine"]]
    assert record.started_at is not None
    assert (ended["state"], ended["num_processors"], ended["hs06"], ended["fqan"]) == (
        "Shut down", 2, 25.0, "/lhcb/Role=pilot")
    assert ended["started_time"] == int(record.started_at.timestamp()) and ended["cpu_seconds"] >= 900
    assert ended["uuid"] == record.cloud_id
    (mt,) = {m["machinetype"] for m in received if m["message_type"] == "machinetype_status"}
    assert mt == "mt"
    assert os.path.isdir(tmp_path / "apel-archive")


def test_a_manager_handing_its_space_on_leaves_accounting_to_the_next_holder(tmp_path: Path, store: Store) -> None:
    """A cycle that ends while its manager is stopping (several managers share the store) writes its outcomes and
    no more: the machine that ended is accounted by the next holder's cycle, once, not before the handoff."""
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    config = accounting_config(tmp_path, space={"processors_limit": 2})
    leaving = [False]
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock,
                       handing_on=lambda: leaving[0])
    run_cycle(ctx)
    clock.advance(60)
    run_cycle(ctx)
    (name,) = [m.name for m in cloud.ours()]
    clock.advance(3600)
    cloud.set_status(name, CloudStatus.STOPPED, "SHUTOFF")
    leaving[0] = True
    for _ in range(3):  # stopped, deleted, gone: while handing on, nothing is accounted
        clock.advance(60)
        run_cycle(ctx)
    assert [r.name for r in Ledger(store).unaccounted("sp")] == [name]
    assert queue_messages(tmp_path / "outgoing") == []
    successor = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    clock.advance(60)
    assert run_cycle(successor).ok
    assert Ledger(store).unaccounted("sp") == []
    jobs = [r for h, records in map(parse, queue_messages(tmp_path / "outgoing")) if h == JOB for r in records]
    assert [j["MachineName"] for j in jobs] == [name]


def test_with_no_archive_and_no_queue_the_ledger_is_kept_and_no_message_is_written(tmp_path: Path,
                                                                                     store: Store) -> None:
    """A simulation's settings (vcycle/sim/run.py): no APEL queue and no archive. The machines are still
    accounted into their months, and not one file but the store's is written under the state directory."""
    import dataclasses

    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    config = accounting_config(tmp_path)
    config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, apel_outgoing_dir=None,
                                                                      apel_archive_dir=None))
    lifetime(config, store, clock, cloud, {0: 3600})
    (month,) = Ledger(store).months("sp")
    assert month.machines == 1 and month.wall_seconds >= 3600
    assert Ledger(store).unaccounted("sp") == []
    assert [p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("state.db")] == []

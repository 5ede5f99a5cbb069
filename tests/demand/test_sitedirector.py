"""Pilots DIRAC's SiteDirector submits through the Vcycle CE (vcycle.demand.sitedirector, without DIRAC): recorded in a
real SQLite store, turned into machines by vcycle's own cycle under its limits, and answered for from the
store, across restarts of either side."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vctest import config_text, load_text

from vcycle.core.model import CloudStatus, Heartbeat
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.demand import make_source
from vcycle.demand.sitedirector import Director, DirectorError, parse_reference, pilot_status, reference
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.store.pilots import PilotBook, PilotState
from vcycle.testing import FakeClock, FakeConnector
from vcycle.userdata.render import render_user_data

S = MachineState
WRAPPER = "#!/bin/bash\n# DIRAC pilot wrapper\necho 'proxy: -----BEGIN RSA PRIVATE KEY----- secret'\n"
PILOTS = {"user_data": "cernvm-dirac-pilot", "demand": "pilots", "min_processors": 1}


def site_config(tmp_path: Path, limit: int = 2, timeout: int = 3600, **mt: object) -> Config:
    return load_text(config_text(
        limit=limit, machinetypes={"dirac-pilot": {**PILOTS, **mt}, "other": {"target_share": 0}},
        settings={"max_create_fraction": 1, "state_dir": tmp_path},
        space={"https_host": "vcycle.example.org"},
        extra=f"[demand pilots]\ntype = sitedirector\nrequest_timeout_seconds = {timeout}\n"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path}/state.db")
    yield opened
    opened.close()


def context(config: Config, store: Store, cloud: FakeConnector, clock: FakeClock) -> SpaceContext:
    sources = {name: make_source(d, config.spaces, store, clock) for name, d in config.demands.items()}

    def render(space: Any, mt: Any, name: str, order: Any, request: str, token: str) -> bytes:
        if mt.name == "other":
            return b"#!/bin/sh\n"
        return render_user_data(space, mt, name, order, request, token, manager="mgr")

    return SpaceContext(config, config.spaces["sp"], cloud, store, sources, render, clock)


def pilots_of(cloud: FakeConnector) -> list[str]:
    return sorted(m.name for m in cloud.ours() if m.owner is not None and m.owner.machinetype == "dirac-pilot")


def test_each_pilot_becomes_one_machine_named_by_its_reference_within_the_limits(tmp_path: Path,
                                                                                store: Store) -> None:
    clock = FakeClock()
    config = site_config(tmp_path, limit=2, target_share=1)
    director = Director(config, store, "sp", "dirac-pilot", ce="ce.example.org", queue="default")
    stamps = director.submit(WRAPPER, 3, now=clock())
    refs = list(stamps)
    assert [parse_reference(r) for r in refs] == [("sp", r.rsplit("/", 1)[1]) for r in refs]
    assert director.ce_status() == (3, 0) and set(director.status(refs).values()) == {"Waiting"}
    cloud = FakeConnector(clock=clock, boot_seconds=60)
    report = run_cycle(context(config, store, cloud, clock))
    # the space holds 2 processors: two pilots get machines (the oldest first), the third waits
    created = pilots_of(cloud)
    assert report.ok and len(created) == 2 and set(created) <= {parse_reference(r)[1] for r in refs}  # type: ignore[index]
    waiting = PilotBook(store).pending("sp")["dirac-pilot"]
    assert [p.name for p in waiting] == sorted(set(r.rsplit("/", 1)[1] for r in refs) - set(created))
    assert director.ce_status() == (3, 0)  # two booting, one waiting: DIRAC must not submit them again
    statuses = director.status(refs)
    assert sorted(statuses.values()) == ["Scheduled", "Scheduled", "Waiting"]
    # each machine boots the wrapper the SiteDirector handed over, with its own pilot stamp
    for name in created:
        user_data = yaml.safe_load(next(m for m in cloud.machines.values() if m.name == name).user_data)
        files = {f["path"]: f for f in user_data["write_files"]}
        wrapper = files["/usr/local/sbin/vcycle-dirac-pilot-wrapper"]
        assert (wrapper["permissions"], wrapper["encoding"]) == ("0700", "b64")
        assert base64.b64decode(wrapper["content"]).decode() == WRAPPER
        stamp = stamps[reference("sp", name)]
        assert f"DIRAC_PILOT_STAMP={stamp} /usr/local/sbin/vcycle-dirac-pilot-wrapper" in \
            files["/usr/local/sbin/vcycle-dirac-pilot"]["content"]
    # the wrappers (they carry proxies) are gone from the store once their machines are requested
    with store.engine.connect() as c:
        kept = dict(c.exec_driver_sql("SELECT name, wrapper FROM pilot_requests").all())
    assert {n for n, w in kept.items() if w} == {p.name for p in waiting}


def test_a_pilot_whose_user_data_cannot_be_rendered_keeps_waiting(tmp_path: Path, store: Store) -> None:
    from vcycle.errors import RenderError

    clock = FakeClock()
    config = site_config(tmp_path, limit=4)
    director = Director(config, store, "sp", "dirac-pilot")
    stamps = director.submit(WRAPPER, 2, now=clock())
    refs = list(stamps)
    ctx = context(config, store, FakeConnector(clock=clock), clock)

    def broken(*args: Any) -> bytes:
        raise RenderError("template cernvm-dirac-pilot: 'x' is undefined")

    ctx.render = broken
    report = run_cycle(ctx)
    assert not report.ok and "user-data not rendered" in report.errors[0].message
    assert set(director.status(refs).values()) == {"Waiting"}
    assert len(PilotBook(store).pending("sp")["dirac-pilot"]) == 2
    ctx.render = context(config, store, FakeConnector(clock=clock), clock).render
    assert run_cycle(ctx).counts["creates"] == 2
    for ref in refs:  # the machine's history names the pilot's stamp, as DIRAC's PilotAgentsDB has it
        (first, *_) = store.history("sp", ref.rsplit("/", 1)[1])
        assert first.reason.endswith(f"; runs pilot stamp {stamps[ref]}")


def test_dirac_sees_pilots_run_finish_and_fail_as_their_machines_do(tmp_path: Path, store: Store) -> None:
    clock = FakeClock()
    config = site_config(tmp_path, limit=4)
    director = Director(config, store, "sp", "dirac-pilot")
    refs = list(director.submit(WRAPPER, 3, now=clock()))
    cloud = FakeConnector(clock=clock, boot_seconds=10)
    ctx = context(config, store, cloud, clock)
    run_cycle(ctx)
    clock.advance(30)
    run_cycle(ctx)
    assert set(director.status(refs).values()) == {"Running"} and director.ce_status() == (0, 3)
    done, failed, running = (parse_reference(r)[1] for r in refs)  # type: ignore[index]
    store.put_heartbeats([("sp", Heartbeat(done, clock(), "200 Success", clock())),
                          ("sp", Heartbeat(failed, clock(), "500 DIRAC pilot failed with status 1", clock()))])
    for name in (done, failed):
        cloud.set_status(name, CloudStatus.STOPPED, "SHUTOFF")
    clock.advance(30)
    run_cycle(ctx)
    clock.advance(30)
    run_cycle(ctx)
    assert director.status(refs) == {refs[0]: "Done", refs[1]: "Failed", refs[2]: "Running"}
    # DIRAC kills the running pilot: vcycle's next cycle deletes its machine
    assert director.kill([refs[2] + ":::stamp"]) == []
    run_cycle(ctx)
    assert running not in pilots_of(cloud) and director.status([refs[2]]) == {refs[2]: "Deleted"}
    (record,) = store.find(running)
    assert record.delete_requested == "DIRAC: pilot killed"


def test_a_refused_create_aborts_its_pilot_and_backs_off_the_next(tmp_path: Path, store: Store) -> None:
    """The same backoff as any machinetype: the cloud refuses a create, DIRAC sees that pilot Aborted, and
    pilots submitted afterwards wait until backoff_seconds have passed."""
    from vcycle.errors import LaunchRejected

    clock = FakeClock()
    config = site_config(tmp_path, limit=10, backoff_seconds=600, fizzle_seconds=0)
    director = Director(config, store, "sp", "dirac-pilot")
    (refused,) = director.submit(WRAPPER, 1, now=clock())
    cloud = FakeConnector(clock=clock)
    cloud.inject("create", LaunchRejected("flavor m1.pilot is not public"), times=1)
    ctx = context(config, store, cloud, clock)
    assert run_cycle(ctx).counts["create_failures"] == 1
    assert director.status([refused]) == {refused: "Aborted"}
    clock.advance(60)
    later = list(director.submit(WRAPPER, 2, now=clock()))
    report = run_cycle(ctx)
    assert report.counts["creates"] == 0 and set(director.status(later).values()) == {"Waiting"}
    assert any(d.reason.startswith("backoff:") for d in report.decisions if d.machinetype == "dirac-pilot")
    clock.advance(600)
    assert run_cycle(ctx).counts["creates"] == 2
    assert set(director.status(later).values()) == {"Scheduled"}  # requested and accepted by the cloud


def test_a_restarted_director_sees_the_same_pilots_and_kills_waiting_ones_before_they_boot(
        tmp_path: Path, store: Store) -> None:
    clock = FakeClock()
    config = site_config(tmp_path, limit=1)
    refs = list(Director(config, store, "sp", "dirac-pilot").submit(WRAPPER, 2, now=clock()))
    again = Director(config, store, "sp", "dirac-pilot")  # the SiteDirector restarted: a new CE object
    assert again.ce_status() == (2, 0)
    again.kill(refs[1:])
    assert again.status(refs) == {refs[0]: "Waiting", refs[1]: "Deleted"}
    cloud = FakeConnector(clock=clock)
    run_cycle(context(load_text(config_text(limit=4, machinetypes={"dirac-pilot": PILOTS},
                                            settings={"max_create_fraction": 1, "state_dir": tmp_path},
                                            space={"https_host": "h"},
                                            extra="[demand pilots]\ntype = sitedirector\n")), store, cloud, clock))
    assert pilots_of(cloud) == [parse_reference(refs[0])[1]]  # type: ignore[index]
    assert again.kill(["vcycle://elsewhere/x", "https://ce/123"]) == ["vcycle://elsewhere/x", "https://ce/123"]


def test_pilots_that_wait_too_long_are_given_up_and_never_started(tmp_path: Path, store: Store) -> None:
    clock = FakeClock()
    config = site_config(tmp_path, limit=0, timeout=600)
    director = Director(config, store, "sp", "dirac-pilot")
    refs = list(director.submit(WRAPPER, 2, now=clock()))
    cloud = FakeConnector(clock=clock)
    ctx = context(config, store, cloud, clock)
    report = run_cycle(ctx)  # no room in the space: they wait
    assert pilots_of(cloud) == [] and director.ce_status() == (2, 0)
    assert any("processors" in d.reason for d in report.decisions)
    from rich.console import Console

    from vcycle.cli.show import show
    from vcycle.store.status import collect

    status = collect(config, store, clock())
    assert status["spaces"]["sp"]["pilots_waiting"] == {"dirac-pilot": 2}
    console = Console(record=True, width=200)
    show(status, console)
    assert "dirac-pilot: 2 pilot(s) from DIRAC's SiteDirector waiting for machines" in console.export_text()
    clock.advance(601)
    assert director.cleanup(now=clock()) == 2
    assert set(director.status(refs).values()) == {"Aborted"} and director.ce_status() == (0, 0)


def test_new_pilots_wake_the_daemon_between_cycles(tmp_path: Path, store: Store) -> None:
    import threading

    from vcycle.demand.sitedirector import SiteDirectorDemand

    config = site_config(tmp_path)
    source = make_source(config.demands["pilots"], config.spaces, store)
    assert isinstance(source, SiteDirectorDemand) and source.watcher is not None
    assert source.watcher.seconds == 5.0  # the default
    source.watcher.seconds = 0.05
    woken = threading.Event()
    source.watch(woken.set)
    try:
        assert source.demand("sp")["dirac-pilot"].machines == 0  # starts the watch
        time.sleep(0.2)
        assert not woken.is_set()
        Director(config, store, "sp", "dirac-pilot").submit(WRAPPER, 2)
        assert woken.wait(5), "new pilots did not wake the daemon"
    finally:
        source.close()
    assert source.watcher.stopping.is_set()


def test_the_director_refuses_a_queue_vcycle_does_not_map_to_pilots(tmp_path: Path, store: Store) -> None:
    config = site_config(tmp_path)
    with pytest.raises(DirectorError, match="VcycleSpace 'nowhere'"):
        Director(config, store, "nowhere", "dirac-pilot")
    with pytest.raises(DirectorError, match="VcycleMachinetype 'nope'"):
        Director(config, store, "sp", "nope")
    with pytest.raises(DirectorError, match=r"\[machinetype sp other\] does not take pilots from DIRAC"):
        Director(config, store, "sp", "other")


def test_a_pilot_machinetype_without_a_share_is_a_configuration_error(tmp_path: Path) -> None:
    from vcycle.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[machinetype sp dirac-pilot\] target_share: must be more than 0"):
        site_config(tmp_path, target_share=0)


@pytest.mark.parametrize(("state", "status"), [
    (None, "Unknown"),
    (PilotState("m", "pending", ""), "Waiting"),
    (PilotState("m", "cancelled", ""), "Deleted"),
    (PilotState("m", "expired", ""), "Aborted"),
    (PilotState("m", "claimed", ""), "Unknown"),  # its machine was forgotten (cleanup_hours) long ago
    (PilotState("m", "claimed", "", S.REQUESTED), "Waiting"),
    (PilotState("m", "claimed", "", S.STARTING), "Scheduled"),
    (PilotState("m", "claimed", "", S.RUNNING), "Running"),
    (PilotState("m", "claimed", "", S.DRAINING), "Running"),
    (PilotState("m", "claimed", "", S.CREATE_FAILED), "Aborted"),
    (PilotState("m", "claimed", "", S.FAILED), "Failed"),
    (PilotState("m", "claimed", "", S.GONE, 200), "Done"),
    (PilotState("m", "claimed", "", S.STOPPED, 300), "Done"),  # 300 No more work: the pilot found no job
    (PilotState("m", "claimed", "", S.STOPPED, 500), "Failed"),
    (PilotState("m", "claimed", "", S.DELETING, 700), "Failed"),
    (PilotState("m", "claimed", "", S.GONE, 700, "DIRAC: pilot killed"), "Deleted"),
])
def test_pilot_status_table(state: PilotState | None, status: str) -> None:
    assert pilot_status(state) == status


@pytest.mark.parametrize(("ref", "parsed"), [
    ("vcycle://sp/vcycle-mt-abc", ("sp", "vcycle-mt-abc")),
    ("vcycle://sp/vcycle-mt-abc:::0123abcd", ("sp", "vcycle-mt-abc")),
    ("vcycle://sp/", None), ("vcycle://sp/a/b", None), ("cloud://sp/x", None), ("", None),
])
def test_references_name_space_and_machine(ref: str, parsed: tuple[str, str] | None) -> None:
    assert parse_reference(ref) == parsed

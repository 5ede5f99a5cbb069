"""The mass-kill breaker through real cycles (FakeConnector, FakeClock, a real SQLite store): an endpoint outage
that stops every machine's heartbeat deletes none of them and raises one alarm a cycle, in the log, the status,
the status page's notices and the metrics; the machines live on when heartbeats return; an operator's
``vcycle machines delete --stalled`` lets the next cycle delete them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from vctest import config_text, load_text

from vcycle.cli.main import main
from vcycle.core.model import CloudStatus, Heartbeat
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store, status
from vcycle.testing import FakeClock, FakeConnector
from vcycle.web.directory import Directory
from vcycle.web.metrics import Metrics
from vcycle.web.pages import overview

MT = {"heartbeat_file": "vm-heartbeat", "heartbeat_seconds": 600, "fizzle_seconds": 300, "backoff_seconds": 0}


def plain_render(space: Any, mt: Any, name: str, order: Any, request: str, token: str) -> bytes:
    return b"#!/bin/sh\n"


def _beat(store: Store, cloud: FakeConnector, clock: FakeClock) -> None:
    store.put_heartbeats([("sp", Heartbeat(m.name, clock())) for m in cloud.ours()
                          if m.status is CloudStatus.RUNNING])


def test_an_endpoint_outage_deletes_no_machine_and_says_so_once_a_cycle(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    text = config_text(limit=10, machinetypes={"mt": MT},
                       settings={"max_create_fraction": 1, "state_url": f"sqlite:///{tmp_path}/state.db",
                                 "state_dir": tmp_path})
    (tmp_path / "vcycle.conf").write_text(text)
    config = load_text(text)
    store = Store.open(config.settings.state_url)
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    for _ in range(15):  # ten machines, running and beating
        run_cycle(ctx)
        _beat(store, cloud, clock)
        clock.advance(60)
    assert len(cloud.ours()) == 10
    caplog.set_level(logging.WARNING, logger="vcycle.loop.cycle")
    deletes_before = sum(1 for op, _ in cloud.calls if op == "delete")
    for _ in range(20):  # the endpoint is down: no heartbeat reaches the store for 20 minutes
        run_cycle(ctx)
        clock.advance(60)
    assert sum(1 for op, _ in cloud.calls if op == "delete") == deletes_before == 0
    assert len(cloud.ours()) == 10
    report = status.collect(config, store, clock())["spaces"]["sp"]["last_cycle"]
    alarms = [d for d in report["decisions"] if d["rule"] == "stall_breaker"]
    assert len(alarms) == 1 and alarms[0]["reason"].startswith("heartbeats stopped for 10 of 10 running machines")
    breaker_lines = [r for r in caplog.records if "heartbeats stopped for" in r.getMessage()]
    assert 1 <= len(breaker_lines) <= 20 and all("machinetype=mt" in r.getMessage() for r in breaker_lines)
    page = overview(config, store, clock(), "1h", 1)
    assert [n["kind"] for n in page["notices"]] == ["alarm"]
    assert "is the endpoint reachable?" in page["notices"][0]["text"]
    metrics = Metrics(Directory(store), clock)
    metrics.observe_reports(store.last_reports(), {"sp": "fake"})
    assert 'vcycle_stall_breaker_open{machinetype="mt",space="sp"} 1.0' in metrics.render().decode()

    _beat(store, cloud, clock)  # the endpoint is back: the machines live on and the breaker closes
    run_cycle(ctx)
    assert len(cloud.ours()) == 10
    assert not [d for d in store.last_reports()["sp"]["decisions"] if d["rule"] == "stall_breaker"]
    metrics.observe_reports(store.last_reports(), {"sp": "fake"})
    assert 'vcycle_stall_breaker_open{machinetype="mt",space="sp"} 0.0' in metrics.render().decode()

    clock.advance(1200)  # silent again; this time an operator checks and confirms that the machines are sick
    run_cycle(ctx)
    assert len(cloud.ours()) == 10
    assert main(["machines", "delete", "--stalled", "sp", "mt", "--config", str(tmp_path / "vcycle.conf")]) == 0
    assert main(["machines", "delete", "--stalled", "sp", "nosuch", "--config", str(tmp_path / "vcycle.conf")]) == 2
    clock.advance(60)
    run_cycle(ctx)
    gone = [d for d in store.last_reports()["sp"]["decisions"] if d["action"] == "delete"]
    assert len(gone) == 10 and all(d["rule"] == "operator" for d in gone)
    assert all("operator confirmed the stalled heartbeats" in d["reason"] for d in gone)
    store.close()

"""A machine reports its cloud's interruption notice (``PUT joboutputs/interruption``): kept in the store at
once, counted, the daemon woken; anything that is not a notice is a 4xx with the reason, and nothing is kept."""

from __future__ import annotations

import json
from pathlib import Path

from webtest import Site

SPOT = {"kind": "spot", "notice": {"action": "terminate", "time": "2026-01-01T12:02:00Z"}}


def test_a_notice_is_kept_at_once_and_wakes_the_daemon(site: Site) -> None:
    site.machine("m1")
    woken = []
    site.endpoint.wake = lambda: woken.append(1)
    answer = site.client.put("/machines/sp/m1/joboutputs/interruption", content=json.dumps(SPOT).encode(),
                             headers=site.auth("m1"))
    assert answer.status_code == 204, answer.text
    beat = site.store.heartbeats("sp")["m1"]  # no flush: written at once
    assert beat.interruption == "EC2 spot interruption notice: terminate at 2026-01-01T12:02:00Z"
    assert beat.interruption_at == site.clock()
    assert woken == [1]
    kept = Path(site.config.settings.joboutputs_dir) / "sp/m1/interruption"
    assert json.loads(kept.read_bytes()) == SPOT
    metrics = site.client.get("/metrics").text
    assert 'vcycle_interruptions_received_total{kind="spot",space="sp"} 1.0' in metrics


def test_the_old_path_without_the_space_works_too(site: Site) -> None:
    site.machine("m1")
    body = {"kind": "rebalance", "notice": {"noticeTime": "2026-01-01T11:58:00Z"}}
    assert site.client.put("/machines/m1/joboutputs/interruption", content=json.dumps(body).encode(),
                           headers=site.auth("m1")).status_code == 204
    assert site.store.heartbeats("sp")["m1"].interruption.startswith("EC2 rebalance recommendation")


def test_what_is_not_a_notice_is_refused_and_not_kept(site: Site) -> None:
    site.machine("m1")
    for body, status, words in [
        (b"terminate!", 422, "not an interruption notice"),
        (json.dumps({"kind": "flood", "notice": {}}).encode(), 422, "unknown kind 'flood'"),
        (json.dumps({"kind": "preempt", "notice": {"Events": []}}).encode(), 422, "no Preempt event"),
        (b"x" * 9000, 413, "at most 8192"),
    ]:
        answer = site.client.put("/machines/sp/m1/joboutputs/interruption", content=body, headers=site.auth("m1"))
        assert answer.status_code == status and words in answer.text, (answer.status_code, answer.text)
    assert "m1" not in site.store.heartbeats("sp")


def test_a_machine_reports_only_for_itself(site: Site) -> None:
    site.machine("m1")
    site.machine("m2")
    answer = site.client.put("/machines/sp/m2/joboutputs/interruption", content=json.dumps(SPOT).encode(),
                             headers=site.auth("m1"))
    assert answer.status_code in (401, 403)
    answer = site.client.put("/machines/sp/m2/joboutputs/interruption", content=json.dumps(SPOT).encode())
    assert answer.status_code == 401
    assert "m2" not in site.store.heartbeats("sp")


def test_a_draining_machine_is_told_so_in_its_heartbeats_answer(site: Site) -> None:
    """The heartbeat answers of a DRAINING machine carry Vcycle-Drain with why (its pilot then ends its work);
    a running machine's carry nothing."""
    from vcycle.core.model import transition
    from vcycle.core.states import MachineState

    site.machine("m1")
    record = site.machine("m2", refresh=False)
    drained = transition(record, MachineState.DRAINING, site.clock(), "drain: drifted (image changed):\n3 run")
    site.store.write("sp", site.store.load("sp").version, [drained])
    site.endpoint.directory.refresh()
    running = site.client.put("/machines/sp/m1/joboutputs/vm-heartbeat", content=b"1", headers=site.auth("m1"))
    assert running.status_code == 204 and "vcycle-drain" not in running.headers
    for answer in (site.client.put("/machines/sp/m2/joboutputs/vm-heartbeat", content=b"1", headers=site.auth("m2")),
                   site.client.post("/api/v1/machines/sp/m2/heartbeat", json={}, headers=site.auth("m2"))):
        assert answer.status_code == 204, answer.text
        assert answer.headers["vcycle-drain"] == "drain: drifted (image changed): 3 run"

"""What operators read: the JSON API, metrics and the OpenAPI document (real app, real SQLite store)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from webtest import Site, make_site

from vcycle.core.model import Action, CycleReport, Decision, ReportError, transition
from vcycle.core.states import MachineState
from vcycle.store import status

ETC = Path(__file__).resolve().parents[2] / "etc"


def test_on_a_loopback_listener_without_a_token_the_api_is_open(site: Site) -> None:
    site.machine("m1")
    answer = site.client.get("/api/v1/status")
    assert answer.status_code == 200
    assert answer.json() == json.loads(json.dumps(status.collect(site.config, site.store, site.clock())))
    assert answer.json()["spaces"]["sp"]["machinetypes"] == {"mt": {"running": 1}, "squid": {}}  # every one


def test_beyond_loopback_the_api_needs_the_operator_token(tmp_path: Path) -> None:
    closed = make_site(tmp_path / "a", listen="0.0.0.0")
    refused = closed.client.get("/api/v1/status")
    assert refused.status_code == 403 and "operator_token" in refused.json()["error"]
    site = make_site(tmp_path / "b", listen="0.0.0.0", settings={"operator_token": "s3cret-operator"})
    assert site.client.get("/api/v1/machines").status_code == 401
    assert site.client.get("/metrics").status_code == 401
    assert site.client.get("/api/v1/machines", headers={"Authorization": "Bearer wrong"}).status_code == 403
    ok = site.client.get("/api/v1/machines", headers={"Authorization": "Bearer s3cret-operator"})
    assert ok.status_code == 200 and ok.json() == {"machines": []}
    # a machine's token is not an operator token
    site.machine("m1")
    assert site.client.get("/api/v1/spaces", headers=site.auth("m1")).status_code == 403


def test_the_secret_never_shows(tmp_path: Path) -> None:
    site = make_site(tmp_path, listen="0.0.0.0", settings={"operator_token": "s3cret-operator"})
    headers = {"Authorization": "Bearer s3cret-operator"}
    record = site.machine("m1")
    for path in ("/api/v1/status", "/api/v1/spaces", "/api/v1/machines", "/metrics", "/api/v1/machines/sp/m1/history"):
        text = site.client.get(path, headers=headers).text
        assert "s3cret-operator" not in text and site.tokens["m1"] not in text
        assert str(record.token_hash) not in text


def test_machines_by_space_and_state_and_a_machines_history(site: Site) -> None:
    record = site.machine("m1")
    site.machine("m2", state=MachineState.STARTING)
    state = site.store.load("sp")
    later = site.clock() + timedelta(seconds=30)
    site.store.write("sp", state.version, [transition(record, MachineState.STOPPED, later, "cloud reports stopped")],
                     history=[("m1", transition(record, MachineState.STOPPED, later, "cloud reports stopped")
                               .last)])
    machines = site.client.get("/api/v1/machines", params={"space": "sp"}).json()["machines"]
    assert sorted(m["name"] for m in machines) == ["m1", "m2"]
    stopped = site.client.get("/api/v1/machines", params={"state": "stopped"}).json()["machines"]
    assert [(m["name"], m["reason"]) for m in stopped] == [("m1", "cloud reports stopped")]
    assert "token_hash" not in stopped[0]
    bad = site.client.get("/api/v1/machines", params={"state": "sleeping"})
    assert bad.status_code == 400 and "running" in bad.json()["error"]
    assert site.client.get("/api/v1/machines", params={"space": "nowhere"}).status_code == 404
    history = site.client.get("/api/v1/machines/sp/m1/history").json()
    assert [h["state"] for h in history["history"]][-1] == "stopped"
    assert site.client.get("/api/v1/machines/sp/ghost/history").status_code == 404
    spaces = site.client.get("/api/v1/spaces").json()["spaces"]
    assert [(s["name"], s["api"], s["configured"]) for s in spaces] == [("sp", "fake", True)]


def test_metrics_count_machines_heartbeats_and_the_cycles_work(site: Site) -> None:
    site.machine("m1")
    site.machine("m2", state=MachineState.STARTING)
    site.client.put("/machines/sp/m1/joboutputs/vm-heartbeat", content=b"x", headers=site.auth("m1"))
    now = site.clock()
    report = CycleReport("sp", now, now + timedelta(seconds=2), ok=False,
                         counts={"creates": 2, "api_list_machines_calls": 1, "api_create_machine_calls": 3},
                         decisions=(Decision(Action.CREATE, "sp", "mt", "demand", rule="share"),
                                    Decision(Action.DELETE, "sp", "mt", "last vm-heartbeat 700s ago", "m9",
                                             rule="heartbeat")),
                         errors=(ReportError("create_refused_quota", "sp", "refused: no cores", "mt", "m3"),),
                         timings={"total_s": 2.0, "api_list_machines_s": 0.1, "api_create_machine_s": 0.6})
    site.store.add_reports([report])
    site.endpoint.metrics.observe_reports(site.store.last_reports(), {"sp": "fake"})
    site.endpoint.metrics.observe_reports(site.store.last_reports(), {"sp": "fake"})  # the same report: once
    text = site.client.get("/metrics").text
    for line in ('vcycle_machines{machinetype="mt",space="sp",state="running"} 1.0',
                 'vcycle_machines{machinetype="mt",space="sp",state="starting"} 1.0',
                 "vcycle_heartbeats_received_total 1.0",
                 'vcycle_creates_total{space="sp"} 2.0',
                 'vcycle_deletes_total{machinetype="mt",reason="heartbeat",space="sp"} 1.0',  # the rule, not the text
                 'vcycle_errors_total{reason="create_refused_quota",space="sp"} 1.0',
                 'vcycle_api_calls_total{connector="fake",operation="create_machine"} 3.0',
                 'vcycle_api_call_seconds_total{connector="fake",operation="create_machine"} 0.6',
                 'vcycle_cycle_duration_seconds_count{space="sp"} 1.0',
                 'vcycle_http_requests_total{route="machines",status="204"} 1.0'):
        assert line in text, line


def test_the_served_openapi_document_is_the_one_checked_in(site: Site) -> None:
    served = site.client.get("/openapi.json").json()
    assert served == json.loads((ETC / "openapi.json").read_text()), "run: make openapi"

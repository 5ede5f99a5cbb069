"""The status page through the real app over a real SQLite store: who may see it, what the overview, a space,
the machines table and a machine's page show, and that nothing secret is on any of them.

The same pages in a real browser: tests/e2e/test_status_page.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from webtest import Site, make_site

from vcycle.core.model import Action, Backoff, CycleReport, Decision, Heartbeat, ReportError, transition
from vcycle.core.states import MachineState
from vcycle.web import ui

S = MachineState
TOKEN = "s3cret-operator"


def _cycles(site: Site, count: int = 30) -> None:
    """``count`` cycle reports a minute apart, each with its time-series point; the last with trouble."""
    start = site.clock() - timedelta(minutes=count)
    reports = [CycleReport("sp", start + timedelta(minutes=i), start + timedelta(minutes=i, seconds=2), True,
                           series={"mt": {"running": i, "starting": 2, "idle": 40 - i, "creates": 1}})
               for i in range(count - 1)]
    reports.append(CycleReport(
        "sp", site.clock() - timedelta(seconds=30), site.clock() - timedelta(seconds=28), False,
        decisions=(Decision(Action.CREATE, "mt", None, "demand", "40 idle jobs, 29 running: create 2"),),
        errors=(ReportError("create_refused_quota", "sp", "quota exceeded: 12 of 12 instances", machinetype="mt"),),
        warnings=("the application credential expires in 3 days",), series={"mt": {"running": 29}}))
    site.store.add_reports(reports)


def test_the_overview_shows_spaces_states_trouble_and_plots(site: Site) -> None:
    site.machine("m1")
    site.machine("m2", state=S.STARTING)
    state = site.store.load("sp")
    site.store.write("sp", state.version, backoffs={"squid": Backoff("squid", site.clock(), "2 aborts in 10 min")})
    _cycles(site)
    page = site.client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert 'href="/ui/spaces/sp"' in text and "running 1" in text and "starting 1" in text
    assert "the application credential expires in 3 days" in text
    assert "create_refused_quota: quota exceeded: 12 of 12 instances" in text
    assert "squid until" in text and "2 aborts in 10 min" in text
    assert text.count("<svg viewBox") == 4 and text.count("<polygon") >= 2  # machines stacked by state
    assert "no points in this window" not in text.split("Heartbeat ages")[0]
    for header in ("Content-Security-Policy", "X-Frame-Options", "Cache-Control"):
        assert header in page.headers
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]


def test_the_live_part_alone_is_what_the_page_refreshes(site: Site) -> None:
    site.machine("m1")
    fragment = site.client.get("/ui/", params={"fragment": "1"}).text
    whole = site.client.get("/ui/").text
    assert "<html" not in fragment and "<h1>Spaces</h1>" in fragment
    assert '<main id="live" data-refresh="60">' in whole and "/ui/static/ui.js" in whole
    assert site.client.get("/ui/static/ui.js").headers["content-type"].startswith(("text/javascript",
                                                                                   "application/javascript"))


def test_a_space_page_shows_its_machinetypes_limits_plots_and_last_decisions(site: Site) -> None:
    site.machine("m1")
    _cycles(site)
    text = site.client.get("/ui/spaces/sp", params={"window": "1h"}).text
    assert "<h1>Space sp</h1>" in text and "backoff_seconds=" in text and "fizzle_seconds=" in text
    assert "mt: machines by state" in text and "squid: demand against running machines" in text
    assert "40 idle jobs, 29 running: create 2" in text and "quota exceeded: 12 of 12 instances" in text
    assert site.client.get("/ui/spaces/nowhere").status_code == 404
    refused = site.client.get("/ui/spaces/sp", params={"window": "2h"})
    assert refused.status_code == 400 and "window must be one of" in refused.text


def test_the_machines_table_filters_and_pages(site: Site) -> None:
    for i in range(120):
        site.machine(f"vm-{i:03d}", state=S.RUNNING if i % 4 else S.STARTING, refresh=False,
                     created=site.clock() + timedelta(seconds=i))
    first = site.client.get("/ui/machines").text
    assert "1–50 of 120 machine(s)" in first and "page 1 of 3" in first
    assert first.index("vm-119") < first.index("vm-118") and "vm-069" not in first
    third = site.client.get("/ui/machines", params={"page": "3"}).text
    assert "101–120 of 120" in third and "vm-000" in third and 'rel="next"' not in third
    starting = site.client.get("/ui/machines", params={"state": "starting", "q": "VM-0"}).text
    assert "1–25 of 25" in starting
    names = re.findall(r'href="/ui/machines/sp/(vm-\d+)"', starting)
    assert names and all(int(n[3:]) % 4 == 0 and int(n[3:]) < 100 for n in names)
    assert "?space=&amp;state=starting&amp;q=VM-0&amp;page=" not in starting  # one page: no page links
    assert "no machines match" in site.client.get("/ui/machines", params={"q": "nothing-like-it"}).text
    for bad in ({"state": "sleeping"}, {"page": "0"}, {"page": "x"}):
        answer = site.client.get("/ui/machines", params=bad)
        assert answer.status_code == 400 and ("state must be one of" in answer.text or "page must be" in answer.text)


def test_a_machine_page_shows_its_timeline_features_joboutputs_and_heartbeat(site: Site) -> None:
    record = site.machine("m1", state=S.STARTING)
    site.store.write("sp", site.store.load("sp").version, history=[("m1", record.last)] if record.last else [])
    later = site.clock() + timedelta(minutes=5)
    running = transition(record, S.RUNNING, later, "the cloud says ACTIVE")
    site.store.write("sp", site.store.load("sp").version, [running], history=[("m1", running.last)])
    site.store.put_heartbeats([("sp", Heartbeat("m1", later, address="10.1.2.3",
                                                detail=json.dumps({"load": 0.93, "text": "<b>busy</b>"})))])
    site.endpoint.joboutputs.write("sp", "m1", "pilot.log", b"pilot started <script>x</script>\n")
    page = site.client.get("/ui/machines/sp/m1")
    text = page.text
    assert page.status_code == 200 and "<h1>Machine m1</h1>" in text
    assert text.count('y="20" width=') == 2  # one timeline segment per state: starting, then running
    assert "the cloud says ACTIVE" in text and "10.1.2.3" in text and "&lt;b&gt;busy&lt;/b&gt;" in text
    assert "<th>allocated_cpu</th><td>2</td>" in text and "<th>shutdowntime</th>" in text
    assert 'href="/ui/machines/sp/m1/joboutputs/pilot.log"' in text and "(33 bytes)" in text
    log = site.client.get("/ui/machines/sp/m1/joboutputs/pilot.log")
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert log.text == "pilot started <script>x</script>\n" and log.headers["X-Content-Type-Options"] == "nosniff"
    assert site.client.get("/ui/machines/sp/m1/joboutputs/missing.log").status_code == 404
    assert site.client.get("/ui/machines/sp/m1/joboutputs/..%2Fstate.db").status_code in (400, 404)
    assert site.client.get("/ui/machines/sp/nobody").status_code == 404


def test_beyond_loopback_the_page_needs_the_operator_token_or_its_session(tmp_path: Path) -> None:
    closed = make_site(tmp_path / "a", listen="0.0.0.0")
    refused = closed.client.get("/ui/")
    assert refused.status_code == 403 and "operator_token" in refused.text
    site = make_site(tmp_path / "b", listen="0.0.0.0", settings={"operator_token": TOKEN})
    for path in ("/ui/", "/ui/machines", "/ui/spaces/sp", "/ui/machines/sp/m1",
                 "/ui/machines/sp/m1/joboutputs/x.log"):
        login = site.client.get(path)
        assert login.status_code == 401 and 'name="token"' in login.text, path
    assert site.client.get("/ui/", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert site.client.get("/ui/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    wrong = site.client.post("/ui/login", data={"token": "guess", "next": "/ui/machines"})
    assert wrong.status_code == 403 and "wrong operator token" in wrong.text and "set-cookie" not in wrong.headers
    site.client.cookies.set(ui.SESSION_COOKIE, "1.deadbeef")
    assert site.client.get("/ui/").status_code == 401  # forged
    site.client.cookies.clear()
    elsewhere = site.client.post("/ui/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    ok = site.client.post("/ui/login", data={"token": TOKEN, "next": "/ui/machines"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/machines"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    assert site.client.get("/ui/machines").status_code == 200  # the client keeps the cookie
    away = site.client.post("/ui/login", data={"token": TOKEN, "next": "//evil.example/x"}, follow_redirects=False)
    assert away.headers["location"] == "/ui/"
    site.client.post("/ui/logout")
    assert site.client.get("/ui/").status_code == 401


def test_no_page_shows_a_secret(tmp_path: Path) -> None:
    site = make_site(tmp_path, listen="0.0.0.0", settings={"operator_token": TOKEN})
    record = site.machine("m1")
    _cycles(site)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/ui/", "/ui/spaces/sp", "/ui/machines", "/ui/machines/sp/m1", "/ui/?fragment=1"):
        text = site.client.get(path, headers=headers).text
        assert TOKEN not in text and site.tokens["m1"] not in text and str(record.token_hash) not in text, path


def test_the_root_leads_to_the_page_and_a_session_ends_after_its_time_or_with_its_token(site: Site) -> None:
    root = site.client.get("/", follow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/ui/"
    assert ui.session_valid(ui.session_value("t", 1000), "t", 1000 + ui.SESSION_SECONDS)
    assert not ui.session_valid(ui.session_value("t", 1000), "t", 1001 + ui.SESSION_SECONDS)  # expired
    assert not ui.session_valid(ui.session_value("t", 1000), "other", 1000)  # the token changed
    assert not ui.session_valid(None, "t", 1000)

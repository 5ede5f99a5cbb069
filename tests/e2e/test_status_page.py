"""The status page in a real browser: Debian's headless Chromium, driven by Playwright, against the endpoint served
by uvicorn over real TLS on a listener beyond loopback (0.0.0.0), so that the operator token is needed.

The store behind it holds a simulated day of two spaces (real cycles over in-memory clouds on a FakeClock,
scripts/statusday.py) and a third space of 50,000 machines. Each test checks that the browser logged no console
error, no page error and no failed request (a Content-Security-Policy violation is a console error). Screenshots
are kept in ``artefacts/status-page/`` (or $VCYCLE_ARTEFACTS).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from statusday import DAY_CONFIG, add_machines, simulate_day
from vctest import load_text

from vcycle.store import Store
from vcycle.store.browse import Browse
from vcycle.testing import FakeClock, free_port, make_server_pki
from vcycle.web.app import build, create_app
from vcycle.web.server import Background, make_server

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("VCYCLE_ARTEFACTS", ROOT / "artefacts")) / "status-page"
TOKEN = "operator-token-for-the-browser-test"
BIG = 50_000


@dataclass
class Served:
    url: str
    store: Store
    browse: Browse


@dataclass
class Watched:
    """A browser page whose console errors, page errors and failed requests are collected."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def clean(self) -> None:
        assert self.problems == [], "the browser reported problems: " + "; ".join(self.problems)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("status-page")
    make_server_pki(str(directory / "pki"))
    port = free_port()
    config = load_text(DAY_CONFIG.format(
        cycle_seconds=2, listen=f"0.0.0.0:{port}", cert=directory / "pki" / "server.pem",
        key=directory / "pki" / "server.key", state_url=f"sqlite:///{directory}/state.db", state_dir=directory,
        extra=f"operator_token = {TOKEN}"))
    store = Store.open(config.settings.state_url)
    clock = FakeClock()
    simulate_day(config, store, clock, spaces=("cern-prod", "ral-cloud"))
    add_machines(config, store, "big-site", BIG, clock())
    background = Background(make_server(create_app(build(config, store, clock=clock)), config.settings))
    background.start()
    try:
        yield Served(f"https://127.0.0.1:{port}", store, Browse(store))
    finally:
        background.stop()
        store.close()


def _watched(browser: Any) -> Watched:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    watched = Watched(page)
    page.on("console", lambda m: watched.problems.append(f"console {m.type}: {m.text}") if m.type == "error"
            else None)
    page.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: watched.problems.append(f"request failed: {r.url} {r.failure}")
            if not _cancelled(r.failure) else None)
    return watched


def _cancelled(failure: str | None) -> bool:
    """A load the browser gave up because the test moved the page on (a favicon still loading when a form is
    sent): Chromium's net::ERR_ABORTED. A server that fails a load shows as another error or a bad status."""
    return failure == "net::ERR_ABORTED"


@pytest.fixture
def anonymous(browser: Any) -> Iterator[Watched]:
    watched = _watched(browser)
    yield watched
    watched.page.context.close()


@pytest.fixture
def operator(browser: Any, served: Served) -> Iterator[Watched]:
    """A page logged in through the login form."""
    watched = _watched(browser)
    page = watched.page
    page.goto(f"{served.url}/ui/")
    page.fill("input[name=token]", TOKEN)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Spaces"
    assert [p for p in watched.problems if "status of 401" not in p] == []  # the login form came with a 401
    watched.problems.clear()
    yield watched
    page.context.close()


def test_without_the_token_the_page_is_refused_and_shows_no_machine(anonymous: Watched, served: Served) -> None:
    page = anonymous.page
    answer = page.goto(f"{served.url}/ui/machines?space=big-site")
    assert answer is not None and answer.status == 401
    assert page.locator("input[name=token]").count() == 1 and "big-site-0" not in page.content()
    page.fill("input[name=token]", "a guess")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "wrong operator token" in page.content() and "big-site-0" not in page.content()
    answer = page.goto(f"{served.url}/ui/machines/big-site/big-site-000001")
    assert answer is not None and answer.status == 401
    page.screenshot(path=str(ARTEFACTS / "login.png"))
    # the browser logs the 401s and the 403 of the wrong guess as failed loads; nothing else may show
    anonymous.problems[:] = [p for p in anonymous.problems if not re.search(r"status of 40[13]", p)]
    anonymous.clean()


def test_the_overview_shows_the_spaces_and_plots_of_a_day_and_updates_itself(operator: Watched,
                                                                             served: Served) -> None:
    page = operator.page
    page.goto(f"{served.url}/ui/?window=24h")
    rows = page.locator("table.spaces tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).locator("td").first.inner_text().split()[0] for i in range(3)] == \
        ["big-site", "cern-prod", "ral-cloud"]
    assert "running" in rows.nth(1).inner_text()
    figures = page.locator("figure.plot")
    assert figures.count() == 4
    assert figures.nth(0).locator("> svg polygon").count() >= 2  # machines stacked by state over the day
    assert figures.nth(1).locator("> svg polyline").count() >= 1  # demand against running machines
    assert figures.nth(2).locator("> svg rect").count() >= 24  # creates, deletes and aborts in (almost) every hour
    assert figures.nth(3).locator("> svg rect").count() == 7  # heartbeat ages, seven bins
    page.screenshot(path=str(ARTEFACTS / "overview.png"), full_page=True)
    page.evaluate("window.notReloaded = true")
    page.wait_for_selector("#live[data-refreshed]", timeout=15_000)  # cycle_seconds = 2
    assert page.evaluate("window.notReloaded") is True  # swapped in place, not reloaded
    assert page.locator("table.spaces tbody tr").count() == 3
    page.click("text=cern-prod")
    page.wait_for_selector("h1:has-text('Space cern-prod')")
    assert page.locator("figure.plot").count() == 3 + 2 * 2  # the space's, then two per machinetype
    assert page.locator("details").count() == 10  # its last cycles, with their decisions
    page.screenshot(path=str(ARTEFACTS / "space.png"), full_page=True)
    operator.clean()


def test_the_machines_table_filters_and_pages_through_50000_machines(operator: Watched, served: Served) -> None:
    page = operator.page
    page.goto(f"{served.url}/ui/machines")
    page.select_option("select[name=space]", "big-site")
    with page.expect_navigation():
        page.click("form.filters button")
    assert page.locator("p.count").inner_text() == f"1–50 of {BIG} machine(s)"
    assert page.locator("table.machines tbody tr").count() == 50
    with page.expect_navigation():
        page.click("a[rel=next]")
    assert page.locator("p.count").inner_text() == f"51–100 of {BIG} machine(s)"
    assert "page 2 of 1000" in page.locator("nav.pages").inner_text()
    with page.expect_navigation():
        page.click("nav.pages >> text=last")
    assert page.locator("p.count").inner_text() == f"49951–50000 of {BIG} machine(s)"
    failed = served.browse.machines(space="big-site", state="failed").total
    page.select_option("select[name=state]", "failed")
    page.fill("input[name=q]", "")
    with page.expect_navigation():
        page.click("form.filters button")
    assert 0 < failed < BIG and page.locator("p.count").inner_text().endswith(f"of {failed} machine(s)")
    assert set(page.locator("table.machines tbody td:nth-child(4)").all_inner_texts()) == {"failed"}
    in_b = served.browse.machines(space="big-site", state="failed", text="zone-b").total
    page.fill("input[name=q]", "zone-b")
    with page.expect_navigation():
        page.press("input[name=q]", "Enter")
    assert page.locator("p.count").inner_text().endswith(f"of {in_b} machine(s)")
    assert set(page.locator("table.machines tbody td:nth-child(8)").all_inner_texts()) == {"zone-b"}
    page.screenshot(path=str(ARTEFACTS / "machines.png"), full_page=True)
    operator.clean()


def test_a_machines_page_shows_its_whole_history_as_a_timeline(operator: Watched, served: Served) -> None:
    page = operator.page
    gone = served.browse.machines(space="cern-prod", state="gone", limit=1).records[0]
    history = served.store.history("cern-prod", gone.name)
    page.goto(f"{served.url}/ui/machines?space=cern-prod&q={gone.name}")
    with page.expect_navigation():
        page.click(f"text={gone.name}")
    assert page.locator("h1").inner_text() == f"Machine {gone.name}"
    segments = page.locator("figure.plot > svg rect")
    assert len(history) >= 3 and segments.count() == len(history)  # requested, starting, running, ... gone
    steps = page.locator("ol.history li")
    assert steps.count() == len(history)
    assert [steps.nth(i).locator(".state").inner_text() for i in range(steps.count())] == \
        [h.state.value for h in history]
    assert page.locator("h3:has-text('jobfeatures') + table").inner_text().count("\n") >= 3  # its MJF values
    page.screenshot(path=str(ARTEFACTS / "machine.png"), full_page=True)
    operator.clean()

"""The month's money on the status page and in the status API, as the last cycle counted it (real app, real
SQLite store)."""

from __future__ import annotations

from pathlib import Path

from vctest import T0
from webtest import make_site

from vcycle.core.model import CycleReport

MONEY = {"month": "2026-01", "to_date": 12.5, "burn_per_hour": 1.25, "projected_month": 850.0,
         "unpriced_machines": 2}


def test_the_space_page_and_the_api_show_spend_burn_and_projection(tmp_path: Path) -> None:
    site = make_site(tmp_path, machinetypes={"mt": {"price_per_hour": 0.25, "user_data": "u"}})
    site.store.add_reports([CycleReport("sp", T0, T0, ok=True, spend=MONEY)])
    page = site.client.get("/ui/spaces/sp").text
    assert "spend 2026-01: 12.50 to date · burning 1.250 an hour · 850.00 projected by the month's end" in page
    shown = site.client.get("/api/v1/status").json()["spaces"]["sp"]["spend"]
    assert shown == {**MONEY, "max_cost_per_hour": None, "budget_per_month": None}


def test_a_space_without_prices_shows_no_spend(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.store.add_reports([CycleReport("sp", T0, T0, ok=True)])
    assert "spend" not in site.client.get("/ui/spaces/sp").text.split("Machinetypes")[0]
    assert site.client.get("/api/v1/status").json()["spaces"]["sp"]["spend"] is None


def test_vcycle_status_says_the_month_in_one_line() -> None:
    from vcycle.cli.show import spend_line

    line = spend_line({**MONEY, "max_cost_per_hour": 4.0, "budget_per_month": None})
    assert line == ("spend 2026-01: 12.50 to date, burning 1.250 an hour, 850.00 projected by the month's end "
                    "(2 machine(s) of unknown price not counted); caps: max_cost_per_hour 4")

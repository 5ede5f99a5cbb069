"""The simulator's HTML report in a real browser (Debian's headless Chromium, driven by Playwright): every label
of every plot is drawn inside its plot, none cut off at an edge, and the page loads nothing from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vctest import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]

# Each <text> of each plot: its box as the browser lays it out, against its <svg>'s.
CUT_OFF = """() => {
  const cut = [];
  for (const svg of document.querySelectorAll('svg')) {
    const outer = svg.getBoundingClientRect();
    for (const text of svg.querySelectorAll('text')) {
      const box = text.getBoundingClientRect();
      if (box.left < outer.left - 0.5 || box.right > outer.right + 0.5 || box.top < outer.top - 0.5 ||
          box.bottom > outer.bottom + 0.5) {
        cut.push(`${svg.getAttribute('aria-label')}: "${text.textContent}" ${box.left.toFixed(1)}..` +
                 `${box.right.toFixed(1)} outside ${outer.left.toFixed(1)}..${outer.right.toFixed(1)}`);
      }
    }
  }
  return cut;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        unavailable("Chromium", "no chromium on PATH (make tools installs Debian's)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable("Playwright", str(exc))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def test_no_label_of_the_reports_plots_is_cut_off(tmp_path: Path, browser: Any) -> None:
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "simulate", "--config",
                           str(ROOT / "etc" / "simulate" / "example.conf"), "--trace",
                           str(ROOT / "etc" / "simulate" / "trace.csv"), "--clouds",
                           str(ROOT / "etc" / "simulate" / "clouds.ini"), "--until", "12h", "--report", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    page = browser.new_page(viewport={"width": 1280, "height": 1800})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((out / "report.html").as_uri())
    assert page.locator("svg").count() == 3
    assert page.locator("svg text").count() > 30  # the axes' labels and the legends
    assert page.evaluate(CUT_OFF) == []
    assert requests == [(out / "report.html").as_uri()]  # nothing fetched: it renders without network access
    page.close()

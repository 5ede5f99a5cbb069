"""The simulator's HTML report in a real browser (Debian's headless Chromium, driven by Playwright; see
conftest.py): every label of every plot is drawn inside its plot, none cut off at an edge, and the page loads
nothing from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

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

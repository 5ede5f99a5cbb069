"""The status page, measured in Chromium, and the store growth of its time series.

Set-up: a SQLite store holding a simulated day of two spaces (real cycles over in-memory clouds,
scripts/statusday.py) and a third space of 50,000 machines; ``vcycle serve`` in its own process on a free
loopback port over TLS (open without a token: loopback only). Debian's headless Chromium, driven by
Playwright, loads the pages, each time in a fresh browser context (no cache, no cookies).

1. first_paint_ms: the overview (``/ui/``, its plots of the day included), from navigation start to the
   browser's first contentful paint (the Paint Timing API), median of --runs loads.
2. machines_page_ms: a page of the machines table of the 50,000-machine space, from navigation start to
   the load event (Navigation Timing), median over --runs loads of pages spread over the table, with and
   without a state filter and a search.
3. series_bytes_per_day: what a day of time series adds to the store for 100 spaces of three machinetypes
   each, one point per space and cycle (cycle_seconds 60: 1,440 points per space), written as the daemon
   writes them (with the cycle reports) and merged as its housekeeping merges them (points older than a
   day, one per ten minutes), measured on the third day as the growth of the pages of the series table and
   its indexes in the SQLite file (SQLite's dbstat). The first day's growth (nothing merged yet) is printed
   too.

    .venv/bin/python benchmarks/ui.py [--runs 7] [--machines 50000]

Ends with ``RESULT first_paint_ms=... machines_page_ms=... series_bytes_per_day=...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

from statusday import DAY_CONFIG, add_machines, simulate_day  # noqa: E402

from vcycle.config import load_config  # noqa: E402
from vcycle.core.model import CycleReport  # noqa: E402
from vcycle.store import Store  # noqa: E402
from vcycle.store.series import Series  # noqa: E402
from vcycle.testing import FakeClock, free_port, make_server_pki, wait_for  # noqa: E402

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PAINT = "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
PAINTED = "() => performance.getEntriesByName('first-contentful-paint').length > 0"
LOADED = "() => performance.getEntriesByType('navigation')[0].loadEventEnd"


def build(directory: str, machines: int) -> tuple[str, int]:
    """The store and the configuration ``vcycle serve`` reads; its port."""
    make_server_pki(os.path.join(directory, "pki"))
    port = free_port()
    conf = os.path.join(directory, "vcycle.conf")
    with open(conf, "w") as stream:
        stream.write(DAY_CONFIG.format(cycle_seconds=60, listen=f"127.0.0.1:{port}",
                                       cert=os.path.join(directory, "pki", "server.pem"),
                                       key=os.path.join(directory, "pki", "server.key"),
                                       state_url=f"sqlite:///{directory}/state.db", state_dir=directory, extra=""))
    config = load_config([conf], hostname="bench")
    store = Store.open(config.settings.state_url)
    clock = FakeClock()
    simulate_day(config, store, clock, spaces=("cern-prod", "ral-cloud"))
    add_machines(config, store, "big-site", machines, clock())
    store.close()
    return conf, port


def measure_pages(url: str, runs: int, machines: int) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    paints, pages = [], []
    rng = random.Random(3)
    last_page = max(1, machines // 50)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             args=FLAGS)
        for i in range(runs + 1):  # the first of each is a warm-up (the server's first reads), not counted
            for target, found in (("/ui/", paints), (_machines_path(rng, last_page, i), pages)):
                context = browser.new_context(ignore_https_errors=True)
                page = context.new_page()
                answer = page.goto(url + target, wait_until="load")
                assert answer is not None and answer.status == 200, (target, answer and answer.status)
                if target == "/ui/":
                    page.wait_for_function(PAINTED, timeout=10_000)
                value = page.evaluate(PAINT if target == "/ui/" else LOADED)
                if i:
                    found.append(float(value))
                context.close()
        browser.close()
    return paints, pages


def _machines_path(rng: random.Random, last_page: int, i: int) -> str:
    page = rng.randint(1, last_page)
    filters = ("", "&state=running", "&q=zone-b", "&state=draining&q=zone-a")[i % 4]
    return f"/ui/machines?space=big-site&page={page if not filters else 1}{filters}"


def series_growth(directory: str, spaces: int = 100, types: int = 3, days: int = 3) -> tuple[int, int]:
    """Bytes the series table and its indexes grow by in a SQLite store: on the first day (every point kept as
    it came), and on the last of ``days`` (steady: a day of new points in, the day before merged one per ten
    minutes by the housekeeping, every ten minutes as the daemon's)."""
    url = f"sqlite:///{directory}/series.db"
    store = Store.open(url)
    series = Series(store)
    rng = random.Random(5)
    start = FakeClock()()

    def used() -> int:  # the pages of the series table and its indexes (SQLite's dbstat)
        with sqlite3.connect(f"{directory}/series.db") as db:
            found = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name IN "
                               "(SELECT name FROM sqlite_schema WHERE tbl_name = 'series')").fetchone()[0]
        return int(found or 0)

    sizes = [used()]
    for minute in range(days * 1440):
        at = start + timedelta(minutes=minute)
        store.add_reports([CycleReport(f"space-{s:03d}", at, at + timedelta(seconds=2), True,
                                       series=_point(rng, types)) for s in range(spaces)])
        if minute % 10 == 9:
            for s in range(spaces):
                series.compact(f"space-{s:03d}", at - timedelta(days=1))
        if minute % 1440 == 1439:
            sizes.append(used())
    store.close()
    return sizes[1] - sizes[0], sizes[-1] - sizes[-2]


def _point(rng: random.Random, types: int) -> dict[str, dict[str, int]]:
    """A busy space's point: three machinetypes with machines running and starting, demand, some churn."""
    point = {}
    for t in range(types):
        running = 40 + rng.randint(-3, 3)
        counts = {"running": running, "starting": rng.randint(0, 4), "idle": rng.randint(0, 60),
                  "running_jobs": running}
        if rng.random() < 0.3:
            counts["creates"] = rng.randint(1, 3)
        if rng.random() < 0.3:
            counts["deletes"] = rng.randint(1, 3)
        if rng.random() < 0.1:
            counts["draining"] = 1
        point[f"mt{t}"] = {k: v for k, v in counts.items() if v}
    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--machines", type=int, default=50_000)
    args = parser.parse_args()
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
        sys.exit("benchmarks/ui.py needs Debian's chromium: make tools installs it")
    with tempfile.TemporaryDirectory(prefix="vcycle-ui-bench-") as directory:
        started = time.monotonic()
        logging.disable(logging.CRITICAL)  # the simulated day's refused creates are not news here
        conf, port = build(directory, args.machines)
        logging.disable(logging.NOTSET)
        print(f"store: a simulated day and {args.machines} machines in {time.monotonic() - started:.1f} s")
        log = open(os.path.join(directory, "serve.log"), "w")
        server = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "serve", "--config", conf],
                                  stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for(lambda: _listening(port), 60, "vcycle serve listening")
            paints, pages = measure_pages(f"https://127.0.0.1:{port}", args.runs, args.machines)
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
        print("first contentful paint of /ui/ (ms):", " ".join(f"{p:.0f}" for p in paints))
        print("machines pages, navigation to load (ms):", " ".join(f"{p:.0f}" for p in pages))
        first, growth = series_growth(directory)
        print(f"time series of 100 spaces of 3 machinetypes: {first} bytes on the first day "
              f"({first / 100 / 1440:.0f} bytes per point kept as it came), {growth} bytes per day after "
              f"(older points merged one per ten minutes); {14 * growth + first} bytes kept for history_days 14")
    print(f"RESULT first_paint_ms={statistics.median(paints):.0f} machines_page_ms={statistics.median(pages):.0f} "
          f"series_bytes_per_day={growth}")


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()

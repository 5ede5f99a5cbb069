"""Several managers on one PostgreSQL: each space held by one, taken over when its holder dies, handed on when it
stops, and no act at all by a manager for a space it lost.

Real `vcycle daemon` processes (tests/managers.py), a real PostgreSQL, moto's server for EC2 behind a proxy that
counts every request per manager and space, and a trigger that notes every store write with its writer. Leases
are short here (3 s, renewed every second) so that the tests run in CI time; benchmarks/ha.py runs the same
harness at the defaults (15 s, 5 s), for ten minutes and a hundred kills. VCYCLE_HA_KILLS sets the kills here.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from managers import Site

LEASE = 3.0


@pytest.fixture
def site(tmp_path: Path, postgres_url: str, moto_url: str, moto_ami: str) -> Iterator[Site]:
    made = Site(tmp_path, postgres_url, moto_url, moto_ami, lease=LEASE, renew=1.0, cycle=2)
    try:
        made.start()
        made.wait_for(lambda: made.settled() and shares(made) == [6, 7, 7], 60)  # the first took all, then shared
        yield made
    finally:
        made.close()


def holding(site: Site, label: str) -> list[str]:
    return sorted(s for s, who in site.held_by().items() if who == label)


def shares(site: Site) -> list[int]:
    return sorted(len(holding(site, m.label)) for m in site.managers)


def assert_clean(site: Site) -> None:
    calls, writes = site.fenced()
    assert calls == [], f"cloud calls by a manager not holding the space: {calls[:5]}"
    assert writes == [], f"store writes by a manager not holding the space: {writes[:5]}"
    assert site.double_creates() == 0
    assert site.breaches == 0
    site.wait_for(lambda: not site.leaked(), 30, 0.5)


def test_kills_at_random_points_take_over_within_two_leases_and_never_double_create(site: Site) -> None:
    site.sample_owners()
    site.sample_limits()
    rng = random.Random(int(os.environ.get("VCYCLE_HA_SEED", "23")))
    for _ in range(int(os.environ.get("VCYCLE_HA_KILLS", "4"))):
        time.sleep(rng.uniform(0.2, 2.5))  # a random point of its cycle
        victim = site.pick(rng)
        lost = holding(site, victim.label)
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        taken = site.wait_for(lambda v=victim, lost=lost: all(site.held_by().get(s) not in (None, v.label)
                                                              for s in lost), 2 * LEASE + 2, 0.05)
        assert taken <= 2 * LEASE
        victim.start()
        site.wait_for(lambda v=victim: bool(holding(site, v.label)), 30)  # back, with its share
    site.wait_for(lambda: shares(site) == [6, 7, 7], 30)
    assert site.samples > 50
    assert site.longest_gap <= 2 * LEASE  # a space without a live lease: only between an expiry and its claim
    assert_clean(site)


def test_a_manager_paused_past_its_lease_makes_no_call_and_no_write_for_what_it_lost(site: Site) -> None:
    paused = site.managers[0]
    lost = holding(site, paused.label)
    assert lost
    stopped = time.time()
    paused.signal(signal.SIGSTOP)
    site.wait_for(lambda: all(site.held_by().get(s) not in (None, paused.label) for s in lost), 2 * LEASE + 2)
    time.sleep(1)
    resumed = time.time()
    paused.signal(signal.SIGCONT)
    time.sleep(3 * LEASE)  # it finds its leases lapsed, rejoins and gets a share back under new epochs
    assert holding(site, paused.label), "the paused manager did not rejoin"
    again = {space: at for space, _, who, _, _, at in site.claims() if who == paused.label and at > stopped}
    calls = [c for c in site.proxy.calls if c[1] == paused.label and c[2] in lost and c[0] >= resumed
             and c[0] < again.get(c[2], float("inf"))]
    writes = [w for w in site.writes() if w[1] == paused.label and w[2] in lost and w[0] >= resumed
              and w[0] < again.get(w[2], float("inf"))]
    assert calls == [] and writes == []
    assert "lease lapsed here" in paused.log.read_text() or "lease lost" in paused.log.read_text()
    assert_clean(site)


def test_sigterm_hands_the_spaces_on_within_a_second(site: Site) -> None:
    leaving = site.managers[1]
    held = holding(site, leaving.label)
    assert held
    leaving.signal(signal.SIGTERM)
    handed = site.wait_for(lambda: all(site.held_by().get(s) not in (None, leaving.label) for s in held), 5, 0.02)
    assert leaving.wait(30) == 0
    assert handed <= 1.0
    overs = {over for space, _, _, previous, over, _ in site.claims() if space in held and previous == leaving.label}
    assert overs == {False}  # handed on, not taken over
    assert_clean(site)


def test_postgresql_restarted_under_the_managers_stops_them_acting_until_it_is_back(
        tmp_path: Path, moto_url: str, moto_ami: str) -> None:
    import services

    server = services.postgresql(tmp_path / "postgresql")
    (tmp_path / "site").mkdir()
    made = Site(tmp_path / "site", server.url, moto_url, moto_ami, lease=LEASE, renew=1.0, cycle=2, managers=2,
                spaces=6)
    assert server.restart is not None
    try:
        made.start()
        made.wait_for(made.settled, 60)
        down = time.time()
        server.restart(2 * LEASE)
        back = time.time()
        acted = [c for c in made.proxy.calls if down + LEASE <= c[0] < back]
        assert acted == [], f"cloud calls without a confirmed lease while the store was down: {acted[:5]}"
        made.wait_for(made.settled, 30)
        before = len(made.proxy.calls)
        made.wait_for(lambda: len(made.proxy.calls) > before + 6, 30)  # cycling again
        assert all(m.alive for m in made.managers)
        assert_clean(made)
    finally:
        made.close()
        server.stop()

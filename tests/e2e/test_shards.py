"""Spaces spread over worker processes: same results as one process, and a dead worker is replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vcycle.config import load_config
from vcycle.loop.daemon import Manager
from vcycle.store import Store
from vcycle.testing import FakeConnector


def write(tmp_path: Path, spaces: int) -> Path:
    text = f"[settings]\nstate_url = sqlite:///{tmp_path}/state.db\nstate_dir = {tmp_path}\nmanager_name = m\n" \
           "space_processes = 2\nmax_create_fraction = 1\n"
    for i in range(spaces):
        text += f"[space s{i}]\napi = fake\nstate_file = {tmp_path}/cloud{i}.json\nprocessors_limit = 2\n" \
                f"[machinetype s{i} mt]\nuser_data = pilot-container\ntarget_share = 1\nbackoff_seconds = 60\n" \
                "fizzle_seconds = 0\n"
    conf = tmp_path / "v.conf"
    conf.write_text(text)
    return conf


@contextmanager
def sharded(tmp_path: Path, spaces: int, factory: Any = None) -> Iterator[tuple[Manager, Store]]:
    """A Manager spreading ``spaces`` fake spaces over two worker processes, closed afterwards."""
    config = load_config([write(tmp_path, spaces)], hostname="h")
    store = Store.open(config.settings.state_url)
    manager = Manager(config, store, connector_factory=factory)
    try:
        yield manager, store
    finally:
        manager.close()
        store.close()


def test_spaces_cycle_in_worker_processes(tmp_path: Path) -> None:
    with sharded(tmp_path, 6) as (manager, store):
        assert manager.shards is not None
        reports = manager.cycle()
        assert [r.space for r in reports] == [f"s{i}" for i in range(6)]
        assert all(r.ok and r.counts["creates"] == 2 for r in reports)
        pids = {w[0].pid for w in manager.shards.workers if w is not None}
        assert os.getpid() not in pids and len(pids) == 2
        for i in range(6):
            assert len(FakeConnector(state_file=str(tmp_path / f"cloud{i}.json")).ours()) == 2
        assert set(store.last_reports()) == {f"s{i}" for i in range(6)}  # the parent saved every report
        second = manager.cycle()
        assert all(r.ok and r.counts.get("creates", 0) == 0 for r in second)


def test_a_dead_worker_is_replaced_before_the_next_cycle(tmp_path: Path) -> None:
    with sharded(tmp_path, 4) as (manager, _):
        assert manager.shards is not None
        manager.cycle()
        victim = manager.shards.workers[0]
        assert victim is not None
        os.kill(victim[0].pid or 0, signal.SIGKILL)
        victim[0].join(timeout=10)
        assert all(r.ok for r in manager.cycle())
        replaced = manager.shards.workers[0]
        assert replaced is not None and replaced[0].pid != victim[0].pid


class DiesOnce(FakeConnector):
    """Kills its worker process in the middle of the first cycle."""

    marker: Path

    def list_machines(self):  # type: ignore[no-untyped-def]
        if not self.marker.exists():
            self.marker.write_text("died")
            os._exit(1)
        return super().list_machines()


def test_a_worker_dying_mid_cycle_fails_its_spaces_only(tmp_path: Path) -> None:
    DiesOnce.marker = tmp_path / "died"

    def factory(space, cfg):  # type: ignore[no-untyped-def]
        kind = DiesOnce if space.name == "s0" else FakeConnector
        return kind(state_file=str(tmp_path / f"cloud{space.name[1:]}.json"))

    with sharded(tmp_path, 4, factory) as (manager, _):
        reports = {r.space: r for r in manager.cycle()}
        assert not reports["s0"].ok and "worker process died" in reports["s0"].errors[0].message
        assert any(r.ok for r in reports.values())  # the other worker's spaces went on
        assert all(r.ok for r in manager.cycle())  # replaced, and the space works again

"""Running cycles: once under a lock (cron mode), or forever (the daemon).

The daemon cycles every ``cycle_seconds`` with a little jitter; SIGTERM (or
SIGINT) lets the current cycle finish and exits; SIGHUP re-reads the
configuration between cycles (refreshing http(s) vacuum pipes), keeping the
old one if the new one is invalid. Cron runs and the daemon take the same lock, so two of them never
act on the same state at once. With ``NOTIFY_SOCKET`` set (systemd
``Type=notify``), readiness, status and watchdog pings are sent.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import IO

from vcycle import connectors
from vcycle.clock import Clock, utc_now
from vcycle.config import load_config
from vcycle.connectors.base import Connector
from vcycle.core.model import CycleReport, ReportError
from vcycle.core.sections import Config, Settings, SpaceConfig
from vcycle.demand import make_source
from vcycle.demand.base import DemandSource, Watched
from vcycle.errors import CloudUnavailable, ConfigError, DemandError, LockHeld, StoreError
from vcycle.loop.calls import Timed
from vcycle.loop.cycle import SpaceContext, run_all, save_reports
from vcycle.loop.launch import renderer
from vcycle.loop.leases import Holder
from vcycle.loop.shards import Shards
from vcycle.store import Store
from vcycle.store.engine import parse, sqlite_path, writable
from vcycle.userdata.sources import Fetcher, template_cache

log = logging.getLogger(__name__)


class Lock:
    """An exclusive, non-blocking flock on a file; released when the process ends, even by SIGKILL."""

    def __init__(self, path: str, held: str = "") -> None:
        self.path = path
        self.held = held  # what to say when another process holds it ({pid}: the holder's, as it wrote it)
        self.stream: IO[str] | None = None

    def __enter__(self) -> Lock:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            stream = open(self.path, "a+")  # held for the life of the process
        except OSError as exc:
            raise StoreError(f"cannot open the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            holder = stream.read().strip() or "unknown"
            stream.close()
            if self.held:
                raise LockHeld(self.held.format(pid=holder)) from None
            raise LockHeld(f"another vcycle holds {self.path}; not acting twice") from None
        stream.seek(0)
        stream.truncate()
        stream.write(f"{os.getpid()}\n")
        stream.flush()
        self.stream = stream
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            fcntl.flock(self.stream, fcntl.LOCK_UN)
            self.stream.close()
            self.stream = None


def lock_path(config: Config) -> str:
    return os.path.join(config.settings.state_dir, "vcycle.lock")


class Locks:
    """What a manager holds while it acts: its state_dir's lock, and for an SQLite store the store's own, so that
    two managers never act on one SQLite file, whatever their state_dir (PostgreSQL stores are shared)."""

    def __init__(self, config: Config) -> None:
        self.locks = [Lock(lock_path(config))]
        self.database = database = sqlite_path(parse(config.settings.state_url))
        if database is not None:
            self.locks.append(Lock(database + ".manager", (
                f"another vcycle manager (pid {{pid}}) acts on the SQLite store {database}: one manager per SQLite "
                "file (stop it first, or share a PostgreSQL store between managers)")))

    def __enter__(self) -> Locks:
        if self.database is not None:
            writable(self.database)  # a read-only store is said to be one, and no lock file is left beside it
        taken: list[Lock] = []
        try:
            for lock in self.locks:
                taken.append(lock.__enter__())
        except BaseException:
            for lock in reversed(taken):
                lock.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self.locks):
            lock.__exit__()


def shared(store: Store) -> bool:
    """Whether several managers may share the store (PostgreSQL): then each holds its spaces under leases."""
    return store.engine.dialect.name != "sqlite"


def make_connector(space: SpaceConfig, settings: Settings) -> Connector:
    """The connector of ``space``'s api (its plugin imported now, on first use)."""
    return connectors.REGISTRY.load(space.api).make(space, settings)


class Manager:
    """The spaces of one configuration, ready to cycle (in this process, or spread over workers)."""

    def __init__(self, config: Config, store: Store, *, clock: Clock = utc_now,
                 connector_factory: Callable[[SpaceConfig, Config], Connector] | None = None,
                 processes: int | None = None, wake: Callable[[], None] | None = None,
                 holder: Holder | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.holder = holder  # where managers share the store: the spaces this one holds, and their guard
        self.connector_factory = connector_factory or (lambda space, cfg: make_connector(space, cfg.settings))
        self.sources: dict[str, DemandSource] = {}
        for name, demand in config.demands.items():
            try:
                self.sources[name] = make_source(demand, config.spaces, store, clock)
            except DemandError as exc:
                log.error("demand=%s cannot be used: %s", name, exc)
                continue
            source = self.sources[name]
            if wake is not None and isinstance(source, Watched):  # asked between cycles: new work wakes the daemon
                source.watch(wake)
        self.contexts: dict[str, SpaceContext] = {}
        self.fetcher = Fetcher(template_cache(config.settings.state_dir))
        self.pool: ThreadPoolExecutor | None = None  # the spaces' threads, kept from cycle to cycle
        count = config.settings.space_processes if processes is None else processes
        if holder is not None and count > 1:
            log.warning("space_processes = %d is not used where managers share the store: one process holds the "
                        "leases and cycles its spaces", count)
            count = 1
        self.shards = Shards(count, list(config.spaces), self._worker, clock) if count > 1 and len(
            config.spaces) > 1 else None

    def _worker(self) -> Callable[[Sequence[str]], list[CycleReport]]:
        """Runs inside a forked worker: its own store connections, connectors and threads."""
        store = Store.open(self.store.engine.url.render_as_string(hide_password=False))
        local = Manager(self.config, store, clock=self.clock, connector_factory=self.connector_factory, processes=1)
        return lambda names: local.cycle(names, save=False)

    def context(self, space: SpaceConfig) -> SpaceContext:
        """The space's context, its connector made on first use (and again after a failure)."""
        found = self.contexts.get(space.name)
        if found is None:
            render = renderer(self.config.settings.manager_name, self.fetcher)
            guard = functools.partial(self.holder.guard, space.name) if self.holder is not None else None
            found = SpaceContext(self.config, space, Timed(self.connector_factory(space, self.config), guard),
                                 self.store, self.sources, render, self.clock,
                                 handing_on=self.holder.handing_on if self.holder is not None else None)
            self.contexts[space.name] = found
        return found

    def cycle(self, only: Sequence[str] = (), *, save: bool = True) -> list[CycleReport]:
        """One cycle of every space (or of ``only``)."""
        names = [name for name in self.config.spaces if not only or name in only]
        if self.shards is not None:
            reports = self.shards.cycle(names)
            if save:
                save_reports(self.store, reports)
            return reports
        contexts, failed = [], []
        for name in names:
            space = self.config.spaces[name]
            try:
                contexts.append(self.context(space))
            except (CloudUnavailable, ImportError) as exc:
                log.error("space=%s skipped this cycle: connector unavailable: %s", space.name, exc)
                now = self.clock()
                failed.append(CycleReport(space.name, now, now, ok=False, errors=(
                    ReportError("connector_unavailable", space.name, f"connector unavailable: {exc}"),)))
        if save:
            save_reports(self.store, failed)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.config.settings.space_workers,
                                           thread_name_prefix="vcycle-space")
        holder = self.holder
        around = (lambda name: holder.cycling([name])) if holder is not None else None
        return failed + run_all(contexts, self.config.settings.space_workers, save_reports=save, pool=self.pool,
                                around=around)

    def close(self) -> None:
        for source in self.sources.values():
            if isinstance(source, Watched):
                source.close()
        if self.shards is not None:
            self.shards.close()
        if self.pool is not None:
            self.pool.shutdown()
        for context in self.contexts.values():
            if context.pool is not None:
                context.pool.shutdown()


def notify(message: str) -> None:
    """Tell systemd (``NOTIFY_SOCKET``), if it listens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc)


class Daemon:
    """Cycles until told to stop; SIGHUP reloads the configuration."""

    def __init__(self, paths: Sequence[str] | None, config: Config, store: Store, *, max_cycles: int | None = None,
                 clock: Clock = utc_now) -> None:
        self.paths = paths
        self.wake = threading.Event()  # set: cycle now (a signal, a demand source saw new work, a space claimed)
        self.holder = Holder(store, config.spaces, config.settings, wake=self.wake.set) if shared(store) else None
        self.manager = Manager(config, store, clock=clock, wake=self.wake.set, holder=self.holder)
        self.store = store
        self.max_cycles = max_cycles
        self.stopping = False
        self.reload_wanted = False
        self.on_reload: list[Callable[[Config], None]] = []  # told of each new configuration (the endpoint)

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: finishing the current cycle, then stopping", signal.Signals(signum).name)
        self.stopping = True
        if self.holder is not None:
            self.holder.stopping()  # the spaces not being cycled are handed on at once
        self.wake.set()

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_wanted = True
        self.wake.set()

    def reload(self) -> None:
        self.reload_wanted = False
        try:
            config = load_config(self.paths, fetch_pipes=True)  # http(s) vacuum pipes refreshed too
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the old one: %s", str(exc).replace("\n", " "))
            return
        for warning in config.warnings:
            log.warning("configuration: %s", warning)
        self.manager.close()
        if self.holder is not None:
            self.holder.spaces = sorted(config.spaces)  # spaces no longer configured are handed on at the next round
        self.manager = Manager(config, self.store, clock=self.manager.clock, wake=self.wake.set, holder=self.holder)
        for tell in self.on_reload:
            tell(config)
        log.info("configuration reloaded: %d space(s)", len(config.spaces))

    def run(self) -> int:
        if self.holder is not None:
            self.store.fence = self.holder
            self.holder.start()
            log.info("managers share the store: %s holds %d of %d space(s) under leases", self.holder.name,
                     len(self.holder.holding()), len(self.holder.spaces))
        notify("READY=1")
        done = 0
        try:
            while not self.stopping:
                started = time.monotonic()
                reports = self._cycle()
                failed = sum(1 for r in reports if not r.ok)
                done += 1
                notify(f"WATCHDOG=1\nSTATUS=cycle {done}: {len(reports)} space(s), {failed} with errors")
                if self.max_cycles is not None and done >= self.max_cycles:
                    break
                period = self.manager.config.settings.cycle_seconds
                jitter = random.uniform(0, min(5.0, period * 0.1))
                self.wake.wait(max(0.0, period - (time.monotonic() - started)) + jitter)
                self.wake.clear()
                if self.reload_wanted and not self.stopping:
                    self.reload()
        finally:
            notify("STOPPING=1")
            self.manager.close()
            if self.holder is not None:
                self.holder.close()
                self.store.fence = None
        log.info("stopped after %d cycle(s)", done)
        return 0

    def _cycle(self) -> list[CycleReport]:
        """One cycle of every space, or where managers share the store, of those this one holds; the reports of
        spaces lost meanwhile are not kept (their new holder reports them)."""
        if self.holder is None:
            return self.manager.cycle()
        names = self.holder.holding()
        if not names:
            return []
        reports = self.manager.cycle(names, save=False)
        save_reports(self.store, [r for r in reports if self.holder.holds(r.space)])
        return reports

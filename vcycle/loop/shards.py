"""Spaces spread over worker processes, for sites whose cycles are CPU-bound.

With ``[settings] space_processes = N`` (N > 1) the daemon forks N
long-lived workers when it starts; each always cycles the same share of the
spaces (so each space's store cache and connector stay in one process), with
its own threads, its own store connections and its own connectors. The
parent asks every worker for one cycle and gathers the reports. A worker
that dies is reported as failed spaces and started again at the next cycle.

Workers are forked before the parent starts any thread of its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from vcycle.core.model import CycleReport, ReportError

log = logging.getLogger(__name__)

# (space names) -> reports, run inside a worker
CycleFunction = Callable[[Sequence[str]], list[CycleReport]]


def assign(spaces: Sequence[str], shards: int) -> dict[str, int]:
    """Spaces dealt round-robin in name order: balanced, and fixed for one configuration."""
    return {name: index % shards for index, name in enumerate(sorted(spaces))}


def _serve(connection: Connection, make_cycle: Callable[[], CycleFunction]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the parent decides when to stop
    cycle = make_cycle()
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        connection.send(cycle(message))


class Shards:
    """N worker processes, each cycling its own spaces."""

    def __init__(self, count: int, spaces: Sequence[str], make_cycle: Callable[[], CycleFunction],
                 clock: Callable[[], datetime]) -> None:
        self.count = count
        self.assignment = assign(spaces, count)
        self.make_cycle = make_cycle
        self.clock = clock
        self.context = multiprocessing.get_context("fork")
        self.workers: list[tuple[BaseProcess, Connection] | None] = [None] * count
        for index in range(count):
            self._start(index)

    def _start(self, index: int) -> None:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(child, self.make_cycle), daemon=True,
                                       name=f"vcycle-shard-{index}")
        process.start()
        child.close()
        self.workers[index] = (process, parent)

    def cycle(self, spaces: Sequence[str]) -> list[CycleReport]:
        """One cycle of ``spaces``, each in its worker; reports in the order of ``spaces``."""
        shares: list[list[str]] = [[] for _ in range(self.count)]
        for name in spaces:
            shares[self.assignment[name]].append(name)
        asked = []
        for index, share in enumerate(shares):
            if not share:
                continue
            worker = self.workers[index]
            if worker is None or not worker[0].is_alive():
                self._start(index)
                worker = self.workers[index]
            assert worker is not None
            worker[1].send(share)
            asked.append((index, share))
        reports: dict[str, CycleReport] = {}
        for index, share in asked:
            reports.update(self._gather(index, share))
        return [reports[name] for name in spaces]

    def _gather(self, index: int, share: list[str]) -> dict[str, CycleReport]:
        worker = self.workers[index]
        assert worker is not None
        try:
            return {report.space: report for report in worker[1].recv()}
        except (EOFError, OSError) as exc:
            log.error("shard %d (spaces %s) died during the cycle: %s", index, " ".join(share), exc)
            worker[0].join(timeout=5)
            self.workers[index] = None
            now = self.clock()
            return {name: CycleReport(name, now, now, ok=False, errors=(
                ReportError("worker_died", name, "worker process died during the cycle"),)) for name in share}

    def close(self) -> None:
        for worker in self.workers:
            if worker is None:
                continue
            process, connection = worker
            try:
                connection.send(None)
            except (BrokenPipeError, OSError):
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self.workers = [None] * self.count

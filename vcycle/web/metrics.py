"""Prometheus metrics of the endpoint and of the cycles, as ``GET /metrics`` serves them.

Gauges (machines by state, heartbeat age) are read from the endpoint's
directory of live machines at each scrape. Counters of the cycles' work
(creates, deletes and errors by reason, API calls by operation, cycle
duration) are fed from the cycle reports in the store, so ``vcycle serve``
in its own process shows the daemon's work as well as the daemon itself
does. A report is counted once: by its space and finish time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from vcycle.core.model import API_OPERATIONS
from vcycle.core.states import MachineState
from vcycle.errors import StoreError
from vcycle.store import Store, leases
from vcycle.web.directory import Directory


def error_kind(error: Any) -> str:
    """A report error's kind (reports kept before errors had kinds: 'other')."""
    return str(error.get("kind", "other")) if isinstance(error, Mapping) else "other"


class _Machines(Collector):
    def __init__(self, directory: Directory, now: Callable[[], datetime]) -> None:
        self.directory = directory
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        machines = GaugeMetricFamily("vcycle_machines", "Machines known to vcycle, by state",
                                     labels=["space", "machinetype", "state"])
        ages = GaugeMetricFamily("vcycle_heartbeat_age_seconds",
                                 "Age of the oldest heartbeat among running machines that sent one",
                                 labels=["space", "machinetype"])
        counts: dict[tuple[str, str, str], int] = {}
        oldest: dict[tuple[str, str], float] = {}
        now = self.now()
        for record in self.directory.records():
            key = (record.space, record.machinetype, record.state.value)
            counts[key] = counts.get(key, 0) + 1
            if record.state is MachineState.RUNNING and record.heartbeat_at is not None:
                age = (now - record.heartbeat_at).total_seconds()
                where = (record.space, record.machinetype)
                oldest[where] = max(age, oldest.get(where, 0.0))
        for labels, count in sorted(counts.items()):
            machines.add_metric(list(labels), count)
        for where, age in sorted(oldest.items()):
            ages.add_metric(list(where), age)
        yield machines
        yield ages


class _Leases(Collector):
    """Where managers share the store: each space's lease (held here or not, epoch, seconds to expiry), the
    managers alive and the changes of hands, read from the store at each scrape (every host serves the same)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            now, found, alive, counted = leases.status(self.store)
        except StoreError:
            return
        if not found and not alive:
            return
        held = GaugeMetricFamily("vcycle_lease_held", "1 for the manager holding the space's lease now",
                                 labels=["space", "holder"])
        epoch = GaugeMetricFamily("vcycle_lease_epoch", "The epoch of the space's lease (one more at every claim)",
                                  labels=["space"])
        expiry = GaugeMetricFamily("vcycle_lease_expiry_seconds", "Seconds until the space's lease expires unless "
                                   "renewed (negative: expired, not yet claimed)", labels=["space"])
        for lease in found:
            if lease.live(now):
                held.add_metric([lease.space, lease.holder], 1)
            epoch.add_metric([lease.space], lease.epoch)
            expiry.add_metric([lease.space], lease.expires - now)
        managers = GaugeMetricFamily("vcycle_managers_alive", "Managers alive that share the store")
        managers.add_metric([], len(alive))
        takeovers = CounterMetricFamily("vcycle_lease_takeovers", "Spaces claimed after their holder's lease "
                                        "expired (the holder died, hung or lost the store)")
        takeovers.add_metric([], counted.get("takeovers", 0))
        claims = CounterMetricFamily("vcycle_lease_claims", "Spaces claimed that were free or handed on")
        claims.add_metric([], counted.get("claims", 0))
        yield from (held, epoch, expiry, managers, takeovers, claims)


class Metrics:
    """One registry: the endpoint's own counters, the cycles' counters, the machines' gauges."""

    def __init__(self, directory: Directory, now: Callable[[], datetime]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("vcycle_http_requests", "Requests answered by the endpoint",
                                ["route", "status"], registry=r)
        self.heartbeats = Counter("vcycle_heartbeats_received", "Heartbeats received from machines", registry=r)
        self.interruptions = Counter("vcycle_interruptions_received", "Interruption notices machines reported, by "
                                     "kind (spot, rebalance, preempt)", ["space", "kind"], registry=r)
        self.pending = Gauge("vcycle_heartbeats_pending", "Heartbeats received, not yet written to the store",
                             registry=r)
        self.creates = Counter("vcycle_creates", "Machines created", ["space"], registry=r)
        self.create_decisions = Counter("vcycle_create_decisions", "Creates decided by the planner",
                                        ["space", "machinetype"], registry=r)
        self.deletes = Counter("vcycle_deletes", "Deletes decided by the planner, by the rule that decided them",
                               ["space", "machinetype", "reason"], registry=r)
        self.errors = Counter("vcycle_errors", "Errors in cycles, by kind", ["space", "reason"], registry=r)
        self.cycle_seconds = Histogram("vcycle_cycle_duration_seconds", "Wall time of one space's cycle",
                                       ["space"], registry=r,
                                       buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.api_calls = Counter("vcycle_api_calls", "Cloud API calls", ["connector", "operation"], registry=r)
        self.api_seconds = Counter("vcycle_api_call_seconds",
                                   "Time spent in cloud API calls (divide by vcycle_api_calls_total for the mean)",
                                   ["connector", "operation"], registry=r)
        self.stall_breaker = Gauge("vcycle_stall_breaker_open",
                                   "1 while a machinetype's heartbeats stopped for many machines at once and none "
                                   "is deleted for its heartbeat (max_stall_kill_fraction)", ["space", "machinetype"],
                                   registry=r)
        self.unhealthy = Gauge("vcycle_launch_unhealthy",
                               "1 while a machinetype's recent launches fail (launch_health_failures of "
                               "launch_health_window) and it makes one probe machine at a time",
                               ["space", "machinetype"], registry=r)
        self.spent = Gauge("vcycle_spend_month_to_date", "What the space's machines cost since the month began "
                           "(UTC), at their offering's price", ["space"], registry=r)
        self.burn = Gauge("vcycle_spend_burn_per_hour", "What the space's machines not yet gone cost an hour",
                          ["space"], registry=r)
        self.projected = Gauge("vcycle_spend_projected_month", "Spend to date and the burn for the rest of the month",
                               ["space"], registry=r)
        self._sick: set[tuple[str, str]] = set()
        r.register(_Machines(directory, now))
        r.register(_Leases(directory.store))
        self._seen: dict[str, str] = {}
        self._open: dict[str, set[str]] = {}  # space -> machinetypes whose stall breaker is open
        self._lock = threading.Lock()

    def observe_reports(self, reports: Mapping[str, Mapping[str, Any]], apis: Mapping[str, str]) -> int:
        """Count each space's newest report once; ``apis`` maps space -> connector name. How many were new."""
        new = 0
        with self._lock:
            for space, report in reports.items():
                if self._seen.get(space) == report["finished_at"]:
                    continue
                self._seen[space] = report["finished_at"]
                self._count(space, report, apis.get(space, "unknown"))
                new += 1
        return new

    def _count(self, space: str, report: Mapping[str, Any], api: str) -> None:
        counts = report.get("counts", {})
        timings = report.get("timings", {})
        if counts.get("creates"):
            self.creates.labels(space).inc(counts["creates"])
        for decision in report.get("decisions", []):
            if decision["action"] == "create":
                self.create_decisions.labels(space, decision["machinetype"]).inc()
            elif decision["action"] == "delete":
                self.deletes.labels(space, decision["machinetype"], decision.get("rule") or "other").inc()
        for error in report.get("errors", []):
            self.errors.labels(space, error_kind(error)).inc()
        tripped = {d["machinetype"] for d in report.get("decisions", []) if d.get("rule") == "stall_breaker"}
        for machinetype in self._open.get(space, set()) | tripped:
            self.stall_breaker.labels(space, machinetype).set(1 if machinetype in tripped else 0)
        self._open[space] = tripped
        if "total_s" in timings:
            self.cycle_seconds.labels(space).observe(timings["total_s"])
        money = report.get("spend")
        if money:
            self.spent.labels(space).set(money["to_date"])
            self.burn.labels(space).set(money["burn_per_hour"])
            self.projected.labels(space).set(money["projected_month"])
        for operation in API_OPERATIONS:
            calls = counts.get(f"api_{operation}_calls")
            if calls:
                self.api_calls.labels(api, operation).inc(calls)
                self.api_seconds.labels(api, operation).inc(timings.get(f"api_{operation}_s", 0.0))

    def observe_health(self, unhealthy: Mapping[str, Mapping[str, str]]) -> None:
        """Set the launch health gauge: 1 for each (space, machinetype) in ``unhealthy``, 0 for those that were."""
        sick = {(space, mt) for space, names in unhealthy.items() for mt in names}
        with self._lock:
            for space, mt in self._sick | sick:
                self.unhealthy.labels(space, mt).set(1 if (space, mt) in sick else 0)
            self._sick = sick

    def render(self) -> bytes:
        return generate_latest(self.registry)

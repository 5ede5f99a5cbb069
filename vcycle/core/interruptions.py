"""Interruptions: a cloud's notice that it takes a machine back, as the machine reports it.

The shipped templates watch the cloud's notice from inside the machine and
report it at once to the endpoint (``joboutputs/interruption``) as
``{"kind": KIND, "notice": BODY}``, BODY being what the metadata service
answered, unchanged:

- ``spot``: EC2's ``/latest/meta-data/spot/instance-action``,
  ``{"action": "terminate"|"stop"|"hibernate", "time": "2026-12-02T18:02:00Z"}``;
- ``rebalance``: EC2's ``/latest/meta-data/events/recommendations/rebalance``,
  ``{"noticeTime": "..."}`` (the machine is at elevated risk of a spot notice);
- ``preempt``: Azure's Scheduled Events document
  (``/metadata/scheduledevents``), ``{"DocumentIncarnation": N, "Events": [...]}``
  with an event of ``EventType`` ``Preempt`` (``NotBefore`` in RFC 1123 time).

vcycle then drains the machine (the planner's ``interrupted`` rule), does not
count its stop as an abort unless more than ``max_interruption_fraction`` of
its machinetype's machines of the last hour were interrupted (three at
least), and makes no
machine on the same offering (machinetype, flavor, zone, spot) for
``offering_cooldown_seconds``.

Pure: no clock, no I/O; ``now`` is always given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vcycle.core.model import SPOT, MachineRecord, Offering
from vcycle.core.sections import MachinetypeConfig

KINDS = ("spot", "rebalance", "preempt")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
STORM_WINDOW = timedelta(hours=1)  # max_interruption_fraction counts the interruptions of this last while
STORM_MACHINES = 3  # fewer interrupted machines than this are never a storm (one of one is bad luck)
NOTICE_BYTES = 8192  # the largest report accepted


class BadNotice(ValueError):
    """A report that is not one of the notices above; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One interruption notice: its kind, what the cloud will do, and when (None: not said)."""

    kind: str
    action: str
    at: datetime | None

    def describe(self) -> str:
        when = f" at {self.at.strftime('%Y-%m-%dT%H:%M:%SZ')}" if self.at is not None else ""
        return {
            "spot": f"EC2 spot interruption notice: {self.action}{when}",
            "rebalance": f"EC2 rebalance recommendation{when}: elevated risk of a spot interruption",
            "preempt": f"Azure Scheduled Event Preempt{when}",
        }[self.kind]


def parse(report: Any) -> Notice:
    """The notice in a machine's report (decoded JSON); BadNotice naming what is wrong."""
    if not isinstance(report, dict) or set(report) - {"kind", "notice"} or "kind" not in report:
        raise BadNotice('expected {"kind": "spot"|"rebalance"|"preempt", "notice": {...}}')
    kind, body = report["kind"], report.get("notice")
    if kind not in KINDS:
        raise BadNotice(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(body, dict):
        raise BadNotice("notice must be the JSON object the metadata service answered")
    if kind == "spot":
        action = body.get("action")
        if action not in ("terminate", "stop", "hibernate"):
            raise BadNotice(f"a spot notice's action is terminate, stop or hibernate, not {action!r}")
        return Notice(kind, action, _iso(body.get("time"), "time"))
    if kind == "rebalance":
        return Notice(kind, "rebalance", _iso(body.get("noticeTime"), "noticeTime"))
    events = body.get("Events")
    if not isinstance(events, list):
        raise BadNotice("a Scheduled Events document has a list of Events")
    for event in events:
        if isinstance(event, dict) and event.get("EventType") == "Preempt":
            return Notice(kind, "preempt", _rfc1123(event.get("NotBefore")))
    raise BadNotice("the Scheduled Events document has no Preempt event")


def _iso(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadNotice(f"{key} must be an ISO 8601 time")
    try:
        found = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadNotice(f"{key} {value!r} is not an ISO 8601 time") from None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def _rfc1123(value: Any) -> datetime | None:
    """``Mon, 19 Sep 2016 18:29:47 GMT`` (HTTP's date, in English whatever the locale)."""
    if value in (None, ""):
        return None  # Azure leaves NotBefore empty once the event has started
    if not isinstance(value, str):
        raise BadNotice("NotBefore must be an RFC 1123 time")
    parts = value.replace(",", " ").split()
    try:
        _, day, month, year, clock, zone = parts
        hour, minute, second = (int(x) for x in clock.split(":"))
        if zone not in ("GMT", "UTC", "+0000"):
            raise ValueError(zone)
        return datetime(int(year), MONTHS.index(month) + 1, int(day), hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise BadNotice(f"NotBefore {value!r} is not an RFC 1123 time") from None


def cooling(records: Iterable[MachineRecord], mt: MachinetypeConfig, now: datetime) -> Mapping[Offering, str]:
    """The offerings of ``mt`` an interruption notice cools now -> why, naming the numbers.

    The cloud takes back spot machines only, so where the machinetype names capacity types the notice cools the
    spot offering of the machine's flavor and zone, not its on-demand one; where it names none, the capacity
    type is the connector's and the notice cools the flavor and zone."""
    window = timedelta(seconds=mt.offering_cooldown_seconds)
    capacity = SPOT if SPOT in mt.capacity_types else None
    found: dict[Offering, tuple[datetime, MachineRecord]] = {}
    for r in records:
        at = r.interrupted_at
        if at is None or r.machinetype != mt.name or now - at >= window or at > now:
            continue
        key = Offering(r.flavor or None, r.zone or None, capacity)
        if key not in found or at > found[key][0]:
            found[key] = (at, r)
    return {key: f"{r.name} on {_offering_text(key)} had an interruption notice {int((now - at).total_seconds())}s "
                 f"ago (offering_cooldown_seconds {mt.offering_cooldown_seconds}): no new machine on it until "
                 f"{(at + window).strftime('%H:%M:%SZ')}"
            for key, (at, r) in sorted(found.items(), key=lambda item: item[0].key)}


def _offering_text(key: Offering) -> str:
    return (f"flavor {key.flavor or '(any)'}" + (f" in zone {key.zone}" if key.zone else "")
            + (f" ({key.capacity})" if key.capacity else ""))


def blocks(cooled: Mapping[Offering, str], offering: Offering) -> str | None:
    """Why a create on ``offering`` is held by ``cooled``, or None if it is not.

    What vcycle leaves to the cloud it does not know, so a hold covers it: a flavor cooled in one zone holds
    that flavor where vcycle names no zone, and a cooled offering whose flavor vcycle does not know (the cloud
    did not say) holds the machinetype (``Offering.covers``)."""
    for key, why in cooled.items():
        if key.covers(offering):
            return why
    return None


def tally(records: Iterable[MachineRecord], machinetype: str, now: datetime) -> tuple[int, int]:
    """(interrupted, alive): the machines of ``machinetype`` interrupted in the last STORM_WINDOW, and those that
    ran in it (started, and not stopped before it). The store counts the same in SQL (``Store.interruptions``),
    GONE machines included."""
    since = now - STORM_WINDOW
    alive = interrupted = 0
    for r in records:
        if r.machinetype != machinetype or (r.started_at is None and r.interrupted_at is None):
            continue
        if r.stopped_at is not None and r.stopped_at < since:
            continue
        alive += 1
        if r.interrupted_at is not None and r.interrupted_at >= since:
            interrupted += 1
    return interrupted, alive


def storm(machinetype: str, counts: tuple[int, int], fraction: float) -> str | None:
    """Why interruptions of ``machinetype`` count as aborts now, or None: they do when more than ``fraction`` of
    its machines of the last hour were interrupted in it, STORM_MACHINES at least (``counts`` from ``tally``)."""
    interrupted, alive = counts
    if interrupted >= STORM_MACHINES and interrupted > fraction * alive:
        return (f"{interrupted} of {alive} machines of {machinetype} were interrupted in the last hour, over "
                f"max_interruption_fraction {fraction:g}: counted as an abort")
    return None

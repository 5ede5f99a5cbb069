"""Launch health: whether a machinetype's recent machines reached work, and how it creates while they do not.

Each machine gives one launch outcome, once: it *reached work* when its
batch daemon registered or it sent a heartbeat (or, where neither is
expected, when it ran); it *failed* when the cloud refused its create, it
failed in the cloud or stopped before reaching work, or a deadline ended it
first (launch, register, first heartbeat: core/timeouts.py). A request
closed for capacity is the offering's, not a launch (it cools instead), and
one refused for the space's quota or pace is the space's.

A machinetype is unhealthy while ``launch_health_failures`` of its last
``launch_health_window`` launches failed, the newest among them; it then
creates one probe machine at a time, one per ``offering_cooldown_seconds``,
until a probe reaches work and makes it healthy again.

Pure: no clock, no I/O; ``now`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from vcycle.core import rules
from vcycle.core.model import LaunchOutcome, MachineRecord
from vcycle.core.sections import MachinetypeConfig
from vcycle.core.states import ALIVE_STATES, MachineState

S = MachineState
KEPT = 20  # outcomes kept per machinetype, newest last: the largest window a site may choose
# what a machine that never reached work ended with -> a failed launch (the deadlines' messages among them)
DEADLINE_MESSAGES = {rules.FAILED_TO_START[1], rules.NOT_REGISTERED[1], rules.HEARTBEAT_MISSING[1]}
SPACE_REFUSALS = ("quota", "throttled")  # refusals for the space's quota or pace (errors' kinds): not the launch's


def reached(record: MachineRecord, mt: MachinetypeConfig, batch: bool) -> bool:
    """Whether the machine reached work: registered with the batch system (``batch``: the space has one), sent
    a heartbeat, or ran, where neither is expected of it."""
    if record.registered_at is not None or record.heartbeat_at is not None:
        return True
    return not batch and mt.heartbeat_file is None and record.started_at is not None


def _failure(record: MachineRecord) -> str | None:
    """Why the machine's launch failed, judged from where it is now, or None."""
    state, last = record.state, record.last
    if state is S.CREATE_FAILED:
        reason = last.reason if last is not None else ""
        space_wide = reason.startswith(tuple(f"{rules.CREATE_REFUSED} ({kind})" for kind in SPACE_REFUSALS))
        return reason if reason.startswith(rules.CREATE_REFUSED) and not space_wide else None
    if state is S.FAILED:
        reason = last.reason if last is not None else "no reason given"
        if reason.startswith(rules.NO_CAPACITY):
            return None  # the offering had no room: it cools instead
        return f"failed in the cloud before it reached work ({reason})"
    if record.shutdown_text in DEADLINE_MESSAGES and state in (S.DELETING, S.DELETE_FAILED, S.GONE):
        return f"'{record.shutdown_code} {record.shutdown_text}'"
    if state is S.STOPPED:
        said = f" with '{record.shutdown_code} {record.shutdown_text}'" if record.shutdown_code is not None else ""
        return f"stopped before it reached work{said}"
    return None


def outcomes(before: Mapping[str, MachineRecord], after: Iterable[MachineRecord],
             machinetypes: Mapping[str, MachinetypeConfig], batch: bool) -> list[LaunchOutcome]:
    """The launch outcomes told by a cycle's changes: each machine in ``after`` that reached work or failed
    since ``before`` (the records as they were), where it had not already."""
    found: list[LaunchOutcome] = []
    for record in after:
        mt = machinetypes.get(record.machinetype)
        if mt is None:
            continue
        old = before.get(record.name)
        if old is record:
            continue  # unchanged
        if old is not None and (reached(old, mt, batch) or _failure(old) is not None):
            continue  # its outcome was told already
        at = record.last.at if record.last is not None else record.created_at
        if reached(record, mt, batch):
            found.append(LaunchOutcome(record.machinetype, record.name, at, True, "reached work"))
            continue
        why = _failure(record)
        if why is not None:
            found.append(LaunchOutcome(record.machinetype, record.name, at, False, why))
    return found


def kept(history: Sequence[LaunchOutcome], new: Iterable[LaunchOutcome]) -> tuple[LaunchOutcome, ...]:
    """The machinetype's outcomes with ``new`` added, newest last, the last KEPT."""
    merged = sorted((*history, *new), key=lambda o: (o.at, o.machine))
    return tuple(merged[-KEPT:])


def unhealthy(history: Sequence[LaunchOutcome], mt: MachinetypeConfig) -> str | None:
    """Why the machinetype is unhealthy now, naming the numbers and its newest failure, or None."""
    window = tuple(history[-mt.launch_health_window:])
    failed = [o for o in window if not o.ok]
    if not window or window[-1].ok or len(failed) < mt.launch_health_failures:
        return None
    return (f"{len(failed)} of its last {len(window)} launches failed (launch_health_failures "
            f"{mt.launch_health_failures} of launch_health_window {mt.launch_health_window}); the last: "
            f"{window[-1].machine} {window[-1].reason}")


def probe_hold(history: Sequence[LaunchOutcome], records: Iterable[MachineRecord], made: int, mt: MachinetypeConfig,
               batch: bool, now: datetime) -> str | None:
    """Why an unhealthy machinetype may not make a machine now, or None (healthy, or its probe is due).

    ``made``: its machines created this cycle already. A probe is due when no machine of it is still on its
    way to work and offering_cooldown_seconds have passed since its last outcome.
    """
    why = unhealthy(history, mt)
    if why is None:
        return None
    waiting = sorted(r.name for r in records if r.machinetype == mt.name and r.state in ALIVE_STATES
                     and not reached(r, mt, batch))
    if made or waiting:
        probe = f"its probe {waiting[0]} is" if waiting else "its probe made this cycle is"
        return f"launch health: {why}; {probe} on its way to work"
    due = history[-1].at + timedelta(seconds=mt.offering_cooldown_seconds)
    if now < due:
        return (f"launch health: {why}; one probe machine per offering_cooldown_seconds "
                f"{mt.offering_cooldown_seconds}, the next at {due.strftime('%H:%M:%SZ')}")
    return None

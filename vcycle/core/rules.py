"""The vcycle rules: aborts and backoff, deadlines, flavors, packing jobs into machines; and the rule codes.

Each rule is a small function of values and ``now`` that returns its verdict
with a reason naming the numbers, so that sync and the planner only combine
them. Every decision names the rule that made it by a code of ``RULES``, so
that metrics and status count decisions by their rule, never by their text.
The stuck-state timeouts are a table of their own (timeouts.py).

Pure: no clock, no I/O, no randomness. Configuration objects are only read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from vcycle.core.model import Backoff, Cooldown, JobShape, MachineRecord, Offering
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig

# Rule codes: what made each decision (Decision.rule), with one line each.
RULES: dict[str, str] = {
    # creates and the refusals to create (HOLD)
    "share": "create: the machinetype with the lowest hs06-weighted count per target_share goes next",
    "space_shutdown_time": "hold: the space's shutdown_time has passed",
    "no_limit": "hold: neither processors_limit nor the cloud's quota limits the space",
    "space_limit": "hold: the space's processors limit (or the cloud's quota) is reached",
    "creation_cap": "hold: max_create_fraction of the space's limit was created this cycle",
    "operator_drained": "hold: an operator drained the machinetype",
    "no_flavor": "hold: no flavor has the machinetype's processors",
    "demand_unknown": "hold: the demand source did not answer",
    "too_big": "hold: idle jobs bigger than one machine are not counted",
    "machinetype_limit": "hold: the machinetype's processors_limit is reached",
    "starting_limit": "hold: max_starting_processors are starting",
    "demand_satisfied": "hold: the idle work needs no more machines",
    "ramp_up": "hold: ramp_up_attenuation lets only a share of the missing machines be made each cycle",
    "backoff": "hold: the machinetype backs off after an abort",
    "quota": "hold: the cloud refused a create for its quota; none of that size until a listing shows room",
    "launch_health": "hold: the machinetype's launches fail (launch_health_failures of launch_health_window): one "
                     "probe machine at a time",
    "user_data": "hold: the machinetype's user-data cannot be rendered: its capacity goes to the others",
    "stall_breaker": "hold: heartbeats stopped for many machines at once: none is deleted for its heartbeat",
    "retire_settle": "hold: idle machines are not retired just after a create or a steep fall in idle jobs",
    "disruption_budget": "hold: max_disrupting machines are retiring already",
    "offering_cooldown": "hold: an interruption notice cools the offering (flavor, zone) for a while",
    "drift_replace": "create: a machine as its machinetype is now, ahead of a drifted one it replaces",
    "cost_cap": "hold: one more machine would take what the space's machines cost an hour above max_cost_per_hour",
    "budget_pace": "hold: the space's budget_per_month, paced over what is left of the month, allows no more burn",
    "site_budget_pace": "hold: the site's budget_per_month, paced and split between the spaces, allows no more burn",
    "no_price": "hold: a cap is set and the offering has no price (offering_prices, price_per_hour)",
    # deletes
    "stopped": "delete: the machine shut down",
    "failed": "delete: the cloud reports the machine failed",
    "delete_retry": "delete: a failed delete is tried again",
    "operator": "delete: an operator (or the pilot factory) asked for it",
    "wallclock": "delete: the machine is past its shutdowntime (max_wallclock_seconds)",
    "space_shutdown": "delete: the machine is past the space's shutdown_time",
    "launch_timeout": "delete: the machine is still starting after launch_timeout_seconds (an abort)",
    "first_heartbeat_timeout": "delete: no heartbeat within register_timeout_seconds of the start (an abort)",
    "first_job_timeout": "delete: the batch daemon ran no job within first_job_timeout_seconds while jobs wait "
                         "(an abort)",
    "heartbeat": "delete: the machine's heartbeat is missing or too old",
    "register_timeout": "delete: the machine's batch daemon never registered",
    "register_breaker": "hold: many machines never registered and none of the machinetype ever did (its user-data?): "
                        "none deleted for it",
    "drain_done": "delete: the drained machine's batch daemon has left",
    "drain_timeout": "delete: the machine drained for longer than retire_timeout_seconds",
    # drains
    "drain_operator": "drain: an operator drained the machinetype",
    "idle": "drain: the machine's batch daemon idled beyond what the idle jobs need",
    "drift": "drain: a machine made before a configuration change, once a current one runs in its place",
    "interrupted": "drain: the cloud gave notice that it takes the machine back (spot, rebalance, preempt)",
}

CREATE_REFUSED = "create refused"  # how the reason of a create the cloud refused begins (core/health.py reads it)
NO_CAPACITY = "no capacity"  # how the reason of a machine the cloud had no room for begins: the offering's

# Shutdown codes (HSF-TN-2016-04). 300-699 are aborts; vcycle writes 700s.
ABORT_CODES = range(300, 700)
FAILED_TO_START = (700, "Failed to start")
EXCEEDED_WALLCLOCK = (700, "Exceeded max_wallclock_seconds")
HEARTBEAT_MISSING = (700, "Heartbeat file not updated")
PASSED_SHUTDOWNTIME = (700, "Passed shutdowntime")
DELETED_BY_OPERATOR = (700, "Deleted by operator")
NOT_REGISTERED = (500, "Batch daemon did not register")
NO_JOB = (700, "Ran no job")
DRAINED = (100, "Shutdown as requested: drained")


def seconds(delta: timedelta) -> int:
    """A duration in whole seconds, for messages."""
    return int(delta.total_seconds())


def parse_shutdown_message(message: str) -> tuple[int | None, str]:
    """``'NNN text'`` -> (NNN, text); a message without a code gives (None, message)."""
    code, _, text = message.strip().partition(" ")
    if len(code) == 3 and code.isdigit():
        return int(code), text.strip()
    return None, message.strip()


def abort_reason(record: MachineRecord, fizzle_seconds: int, stopped_at: datetime) -> str | None:
    """Why a machine that stopped counts as an abort, or None if it does not.

    An abort is a shutdown code 300-699, or, without a code, a machine that
    stopped sooner than fizzle_seconds after it started.
    """
    if record.shutdown_code is not None:
        if record.shutdown_code in ABORT_CODES:
            message = f"{record.shutdown_code} {record.shutdown_text or ''}".strip()
            return f"{record.name} stopped with '{message}'"
        return None
    started = record.started_at or record.created_at
    lived = stopped_at - started
    if lived < timedelta(seconds=fizzle_seconds):
        return f"{record.name} stopped {seconds(lived)}s after start, within fizzle_seconds {fizzle_seconds}"
    return None


def hold_seconds(base: int, failures: int, mt: MachinetypeConfig) -> int:
    """How long a hold of ``base`` seconds lasts after ``failures`` in a row: doubled for each after the first, up
    to max_backoff_seconds (never shorter than ``base``)."""
    return int(min(base * 2 ** (max(failures, 1) - 1), max(base, mt.max_backoff_seconds)))


def in_a_row(previous_at: datetime, previous: int, at: datetime, base: int, mt: MachinetypeConfig) -> int:
    """Failures in a row once another comes at ``at``, after ``previous`` of them, the last at ``previous_at``.

    One that comes while the last one's hold lasts (machines made before it, failing too) adds none; one after
    the hold ended (the retry failed) adds one; after backoff_reset_seconds without a failure, the count starts
    again.
    """
    since = at - previous_at
    if since >= timedelta(seconds=mt.backoff_reset_seconds):
        return 1
    if since >= timedelta(seconds=hold_seconds(base, previous, mt)):
        return previous + 1
    return previous


def next_backoff(current: Backoff | None, candidate: Backoff, mt: MachinetypeConfig) -> Backoff:
    """The machinetype's backoff after the abort ``candidate``: the later abort, with its failures in a row."""
    if current is None:
        return candidate
    if candidate.last_abort_at <= current.last_abort_at:
        return current
    failures = in_a_row(current.last_abort_at, current.failures, candidate.last_abort_at, mt.backoff_seconds, mt)
    return Backoff(candidate.machinetype, candidate.last_abort_at, candidate.reason, failures)


def next_cooldown(current: Cooldown | None, candidate: Cooldown, mt: MachinetypeConfig) -> Cooldown:
    """The offering's cooldown after it had no capacity again (``candidate``), with its failures in a row."""
    if current is None or candidate.since <= current.since:
        return candidate if current is None else current
    failures = in_a_row(current.since, current.failures, candidate.since, mt.offering_cooldown_seconds, mt)
    return Cooldown(candidate.machinetype, candidate.offering, candidate.since, candidate.reason, failures)


def _doubled(base: int, failures: int, mt: MachinetypeConfig, key: str) -> str:
    """The words for a hold's length: its key, and how it grew."""
    length = hold_seconds(base, failures, mt)
    if length == base:
        return f"{key} {base}"
    return (f"{key} {base} doubled for {failures} failures in a row: {length} "
            f"(max_backoff_seconds {mt.max_backoff_seconds})")


def backoff_hold(
    backoff: Backoff | None, mt: MachinetypeConfig, not_passed_fizzle: int, now: datetime
) -> str | None:
    """Why the machinetype may not create now because of its last abort, or None."""
    if backoff is None:
        return None
    since = now - backoff.last_abort_at
    length = hold_seconds(mt.backoff_seconds, backoff.failures, mt)
    if since < timedelta(seconds=length):
        return (f"backoff: last abort {seconds(since)}s ago, "
                f"{_doubled(mt.backoff_seconds, backoff.failures, mt, 'backoff_seconds')} ({backoff.reason})")
    if since < timedelta(seconds=length + mt.fizzle_seconds) and not_passed_fizzle > 0:
        return (f"backoff: last abort {seconds(since)}s ago, within backoff_seconds + fizzle_seconds "
                f"{length + mt.fizzle_seconds}, and {not_passed_fizzle} machine(s) not yet past "
                f"fizzle_seconds {mt.fizzle_seconds}")
    return None


def cooldown_length(cooldown: Cooldown, mt: MachinetypeConfig) -> tuple[int, str]:
    """How long an offering cools after it had no capacity (seconds), and the words for it."""
    return (hold_seconds(mt.offering_cooldown_seconds, cooldown.failures, mt),
            _doubled(mt.offering_cooldown_seconds, cooldown.failures, mt, "offering_cooldown_seconds"))


def shutdown_deadline(created_at: datetime, max_wallclock_seconds: int, space_shutdown: datetime | None) -> datetime:
    """A machine's MJF shutdowntime: its wallclock limit, capped by the space's shutdown_time."""
    deadline = created_at + timedelta(seconds=max_wallclock_seconds)
    if space_shutdown is not None and space_shutdown < deadline:
        return space_shutdown
    return deadline


def creation_cap(limit: int, fraction: float) -> int:
    """Processors that may be created in one cycle: ceil(fraction x limit)."""
    return math.ceil(limit * fraction - 1e-9)


def space_limit(space: SpaceConfig, quota: int | None) -> tuple[int | None, str]:
    """The space's processor limit and where it comes from; None if nothing sets one."""
    configured = space.processors_limit
    if configured is not None and quota is not None:
        if quota < configured:
            return quota, "cloud quota"
        return configured, "processors_limit"
    if configured is not None:
        return configured, "processors_limit"
    if quota is not None:
        return quota, "cloud quota"
    return None, ""


def choose_flavor(mt: MachinetypeConfig, flavors: Mapping[str, int] | None) -> tuple[str | None, int] | str:
    """(flavor, processors) for a new machine, or the reason none fits: the first of ``fitting_flavors``."""
    found = fitting_flavors(mt, flavors)
    return found if isinstance(found, str) else found[0]


def offerings(mt: MachinetypeConfig, flavors: Mapping[str, int] | None) -> list[tuple[Offering, int]] | str:
    """Every (offering, processors) a new machine of ``mt`` may have, in the order they are tried, or the reason
    none fits: by capacity_types first (every spot offering before any on-demand one), then by flavor_names
    (those that fit, see ``fitting_flavors``), then by zones. Without zones or capacity_types, one offering per
    fitting flavor, the cloud or the connector choosing the rest (as before offerings had them)."""
    fitting = fitting_flavors(mt, flavors)
    if isinstance(fitting, str):
        return fitting
    return [(Offering(flavor, zone, capacity), size) for capacity in mt.capacity_types or (None,)
            for flavor, size in fitting for zone in mt.zones or (None,)]


def fitting_flavors(mt: MachinetypeConfig, flavors: Mapping[str, int] | None) -> list[tuple[str | None, int]] | str:
    """Every (flavor, processors) a new machine may have, in flavor_names order (its offerings), or the reason
    none fits.

    A flavor fits when its vcpus lie in [min_processors, max_processors]; where the cloud cannot tell its flavors
    (None), each is taken with min_processors; without flavor_names, the cloud chooses (None). A flavor the
    cloud does not offer is never taken.
    """
    names: Sequence[str] = mt.flavor_names
    if not names:
        return [(None, mt.min_processors)]
    if flavors is None:
        return [(name, mt.min_processors) for name in names]
    high = mt.max_processors if mt.max_processors is not None else math.inf
    found: list[tuple[str | None, int]] = []
    for name in names:
        vcpus = flavors.get(name)
        if vcpus is not None and mt.min_processors <= vcpus <= high:
            found.append((name, vcpus))
    if found:
        return found
    seen = ", ".join(f"{n}={flavors[n]}" if n in flavors else f"{n}=not in cloud" for n in names)
    top = "" if mt.max_processors is None else str(mt.max_processors)
    return f"no flavor has {mt.min_processors}..{top} processors (vcpus: {seen})"


def delete_retry_due(record: MachineRecord, settings: Settings, now: datetime) -> bool:
    """Whether a DELETE_FAILED machine may be deleted again now."""
    last = record.last_delete_at
    return last is None or now - last >= timedelta(seconds=settings.delete_retry_seconds)


def heartbeat_stale(record: MachineRecord, mt: MachinetypeConfig, now: datetime) -> str | None:
    """Why a running machine's heartbeat counts as missing, or None.

    Checked only once fizzle_seconds have passed since the machine started;
    heartbeat_seconds 0 checks only that a heartbeat arrived at all.
    """
    if mt.heartbeat_file is None:
        return None
    started = record.started_at or record.created_at
    if now - started <= timedelta(seconds=mt.fizzle_seconds):
        return None
    if record.heartbeat_at is None:
        return f"no {mt.heartbeat_file} heartbeat {seconds(now - started)}s after start " \
               f"(fizzle_seconds {mt.fizzle_seconds})"
    age = now - record.heartbeat_at
    if mt.heartbeat_seconds > 0 and age > timedelta(seconds=mt.heartbeat_seconds):
        return f"last {mt.heartbeat_file} heartbeat {seconds(age)}s ago (heartbeat_seconds {mt.heartbeat_seconds})"
    return None


def machines_for(shapes: Sequence[JobShape], processors: int, memory_mb: int, disk_kb: int) -> tuple[int, int]:
    """How many machines of this size the jobs fill, packed first-fit by decreasing size; and how many jobs
    are bigger than one machine (those are not counted).

    Machines are kept as a count per free-resource triple, so thousands of jobs of a few shapes pack in
    a few steps.
    """
    capacity = (processors, memory_mb, disk_kb)
    too_big = 0
    used = 0
    free: dict[tuple[int, int, int], int] = {}  # free resources -> machines with exactly that much free
    for shape in sorted(shapes, key=lambda s: (s.processors, s.memory_mb, s.disk_kb), reverse=True):
        need = (max(shape.processors, 0), max(shape.memory_mb, 0), max(shape.disk_kb, 0))
        if any(n > c for n, c in zip(need, capacity, strict=True)):
            too_big += shape.count
            continue
        left = shape.count
        for room in sorted(free, reverse=True):  # first fit into machines already opened
            if not left:
                break
            fits = _fits(room, need)
            if fits == 0:
                continue
            machines = free.pop(room)
            placed_machines = min(machines, math.ceil(left / fits))
            for _ in range(placed_machines):
                take = min(fits, left)
                rest = _less(room, need, take)
                free[rest] = free.get(rest, 0) + 1
                left -= take
            if machines > placed_machines:
                free[room] = free.get(room, 0) + machines - placed_machines
        if left:
            per_machine = _fits(capacity, need)
            full, partial = divmod(left, per_machine)
            used += full + (1 if partial else 0)
            if full:
                rest = _less(capacity, need, per_machine)
                free[rest] = free.get(rest, 0) + full
            if partial:
                rest = _less(capacity, need, partial)
                free[rest] = free.get(rest, 0) + 1
    return used, too_big


def _less(room: tuple[int, int, int], need: tuple[int, int, int], jobs: int) -> tuple[int, int, int]:
    """What is left of ``room`` once ``jobs`` jobs of size ``need`` are in it."""
    return room[0] - jobs * need[0], room[1] - jobs * need[1], room[2] - jobs * need[2]


def _fits(room: tuple[int, int, int], need: tuple[int, int, int]) -> int:
    """How many jobs of size ``need`` fit in ``room`` (a huge number for a job needing nothing)."""
    return min((r // n if n else 1 << 30) for r, n in zip(room, need, strict=True))


def demand_allowance(idle_jobs: int, jobs_per_machine: int, starting: int) -> int:
    """New machines the idle work asks for beyond those still starting."""
    return math.ceil(idle_jobs / jobs_per_machine) - starting

"""The planner: from a snapshot of a space, its demand and the rules, a Plan.

The active half of a cycle. Deletes what must go (stopped or failed
machines, wallclock and shutdown time, stale heartbeats, machines that never
started, deletes to retry) and creates what the shares, limits, backoff and
demand allow, lowest hs06-weighted count per share first, ties to the
larger share, then by name. Every create, delete and refusal carries a Decision whose reason names
the numbers.

Pure: no clock, no I/O, no randomness; ``plan(x) == plan(x)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from itertools import compress, repeat
from operator import attrgetter, is_, is_not
from typing import NamedTuple

from vcycle.core import drift, health, identity, interruptions, retire, rules, spend, timeouts
from vcycle.core.counts import Counts, ExactSum
from vcycle.core.model import (
    Action,
    CreateOrder,
    Decision,
    DeleteOrder,
    Demand,
    DrainOrder,
    MachineRecord,
    Offering,
    Plan,
    SpaceSnapshot,
)
from vcycle.core.sections import Config, MachinetypeConfig, Settings, SpaceConfig
from vcycle.core.states import (
    HOLDS_PROCESSORS,
    LISTED_ALIVE_STATES,
    STARTING_STATES,
    TO_DELETE_STATES,
    WORKING_STATES,
    MachineState,
)

S = MachineState
NAME, INTERRUPTION, INTERRUPTED_AT = attrgetter("name"), attrgetter("interruption"), attrgetter("interrupted_at")
is_none = partial(is_, None)


class _Tally:
    """Running counts for one machinetype while planning."""

    __slots__ = ("counted", "created", "hs06", "not_passed_fizzle", "processors", "running", "starting_machines",
                 "starting_processors", "weighted")

    def __init__(self) -> None:
        self.created = 0  # this cycle
        self.running = 0
        self.processors = 0
        self.starting_processors = 0
        self.starting_machines = 0
        self.weighted = 0.0  # the hs06 (or processors) its machines weigh, per target_share: set once all are counted
        self.hs06: list[float] = []  # what each machine counted one by one weighs
        self.counted: ExactSum | None = None  # what the machines counted together (core/counts.py) weigh
        self.not_passed_fizzle = 0

    def weigh(self, share: float) -> None:
        """Set ``weighted``: the exact sum of what the machines weigh, rounded once, per share (the same whether
        they were counted one by one or together)."""
        if share <= 0.0:
            return
        if self.counted is None:
            total = math.fsum(self.hs06)
        else:
            exact = self.counted.copy()
            for value in self.hs06:
                exact.add(value)
            total = exact.value()
        self.weighted = total / share


def plan(snapshot: SpaceSnapshot, demand: Mapping[str, Demand], config: Config, now: datetime) -> Plan:
    """What the next cycle should do in ``snapshot.space``."""
    space = config.spaces[snapshot.space]
    tallies = {name: _Tally() for name in space.machinetypes}
    kept = _standing(snapshot, space, config.settings)
    deletes, decisions, ours = _deletions(snapshot.records, space, config.settings, tallies, now, kept)
    deletes, decisions = _stall_breaker(deletes, decisions, snapshot.records, space, tallies, now)
    creates = _creations(snapshot, demand, space, config.settings, tallies, ours, now, decisions)
    drains: list[DrainOrder] = []

    def needed(name: str) -> int | None:
        return _needed(space.machinetypes[name], demand.get(name), snapshot.flavors)

    if snapshot.registered is None:  # pilots or containers: drifted ones are told to end their work
        drains, why = retire.pilot_orders(snapshot.records, space, demand, needed, {d.machine for d in deletes}, now,
                                          kept.made if kept is not None else None)
        decisions += why
    else:  # the machines run batch daemons: register timeouts, drains, retirement
        drains, more, why = retire.batch_orders(snapshot.records, snapshot.registered, space, config.settings, demand,
                                                needed, snapshot.draining, {d.machine for d in deletes}, now,
                                                creating={c.machinetype for c in creates},
                                                recent_idle=snapshot.recent_idle)
        deletes += more
        decisions += why
    if kept is None or kept.noticed:
        drains += _interrupted(snapshot.records, space, {d.machine for d in deletes} | {d.machine for d in drains},
                               decisions)
    return Plan(snapshot.space, now, tuple(creates), tuple(deletes), tuple(decisions), tuple(drains))


def _standing(snapshot: SpaceSnapshot, space: SpaceConfig, settings: Settings) -> Counts | None:
    """The snapshot's counts, where they are of its very records under this configuration (core/counts.py)."""
    kept = _kept(snapshot)
    return kept if kept is not None and kept.stand_for(snapshot.records, space, settings) else None


def _kept(snapshot: SpaceSnapshot) -> Counts | None:
    """The snapshot's counts, where they are of its very records (what they count does not depend on the
    configuration: states, fingerprints, notices)."""
    kept = snapshot.counts
    return kept if isinstance(kept, Counts) and kept.records is snapshot.records else None


def _interrupted(records: tuple[MachineRecord, ...], space: SpaceConfig, skip: set[str],
                 decisions: list[Decision]) -> list[DrainOrder]:
    """A drain for every running machine the cloud gave notice of taking back: not budgeted (it goes anyway)."""
    found: list[DrainOrder] = []
    if all(map(is_none, map(INTERRUPTION, records))):  # the common case, found in C
        return found
    for r in records:
        if r.interruption is not None and r.state is S.RUNNING and r.name not in skip:
            reason = f"interrupted: {r.interruption}"
            found.append(DrainOrder(space.name, r.machinetype, r.name, reason))
            decisions.append(Decision(Action.DRAIN, space.name, r.machinetype, reason, r.name, "interrupted"))
    return found


def _cooled(snapshot: SpaceSnapshot, space: SpaceConfig, now: datetime) -> dict[str, dict[Offering, str]]:
    """machinetype -> its offerings cooling now, with why: after an interruption notice (core/interruptions.py),
    or a create the cloud refused for capacity (the snapshot's cooldowns)."""
    records = snapshot.records
    kept = _kept(snapshot)
    if kept is not None and not kept.noticed:  # no notice among them: kept so
        recent: list[MachineRecord] = []
    else:
        recent = list(compress(records, map(is_not, map(INTERRUPTED_AT, records), repeat(None))))  # picked in C
    found: dict[str, dict[Offering, str]] = {}
    for name in sorted({r.machinetype for r in recent} & set(space.machinetypes)):
        cooled = interruptions.cooling(recent, space.machinetypes[name], now)
        if cooled:
            found[name] = dict(cooled)
    for (name, offering), cooldown in sorted(snapshot.cooldowns.items()):
        mt = space.machinetypes.get(name)
        if mt is None:
            continue
        length, words = rules.cooldown_length(cooldown, mt)
        until = cooldown.since + timedelta(seconds=length)
        if cooldown.since <= now < until:
            found.setdefault(name, {})[Offering.parse(offering)] = (
                f"{offering or 'the offering'} had no capacity {int((now - cooldown.since).total_seconds())}s ago "
                f"({cooldown.reason}; {words}): no new machine on it until {until.strftime('%H:%M:%SZ')}")
    return found


class _Offer(NamedTuple):
    """The offering a machinetype's next machine is made on, those to fall through to (same size), and why the
    ones before it are passed over."""

    offering: Offering
    size: int
    fallbacks: tuple[Offering, ...]
    passed: str = ""


def _offering(space: SpaceConfig, mt: MachinetypeConfig, flavors: Mapping[str, int] | None,
              cooled: Mapping[Offering, str], live: Mapping[str, float]) -> _Offer | tuple[str, str]:
    """The first fitting offering no cooldown holds (the cheapest per hs06 first where every one has a price),
    or (rule, reason) why there is none."""
    found = rules.offerings(mt, flavors)
    if isinstance(found, str):
        return "no_flavor", found
    found = _by_price(space, mt, found, live)
    usable = [(o, size) for o, size in found if interruptions.blocks(cooled, o) is None]
    if not usable:
        return "offering_cooldown", interruptions.blocks(cooled, found[0][0]) or "every offering cools"
    (first, size), rest = usable[0], usable[1:]
    passed = "" if first == found[0][0] else (
        f"on {first} ({', '.join(o.key for o, _ in found[:found.index(usable[0])])} cooling)")
    return _Offer(first, size, tuple(o for o, v in rest if v == size and o != Offering()), passed)


def _by_price(space: SpaceConfig, mt: MachinetypeConfig, found: list[tuple[Offering, int]],
              live: Mapping[str, float]) -> list[tuple[Offering, int]]:
    """The offerings cheapest per hs06 (per processor without hs06_per_processor) first, where every one has a
    price; else in their configured order. Equal prices keep that order."""
    if len(found) < 2:
        return found
    prices = [spend.price(space, mt, o, live) for o, _ in found]
    if any(p is None for p in prices):
        return found
    per = mt.hs06_per_processor or 1.0
    order = sorted(range(len(found)), key=lambda i: (prices[i] / (found[i][1] * per), i))  # type: ignore[operator]
    return [found[i] for i in order]


def _needed(mt: MachinetypeConfig, wanted: Demand | None, flavors: Mapping[str, int] | None) -> int | None:
    """How many machines of ``mt`` its idle jobs fill; None when the demand or the machine size is unknown."""
    if mt.demand is None or wanted is None or not wanted.known:
        return None
    flavor = rules.choose_flavor(mt, flavors)
    if isinstance(flavor, str):
        return None
    return _machines_wanted(mt, wanted, flavor[1])[0]


def _machines_wanted(mt: MachinetypeConfig, wanted: Demand, size: int) -> tuple[int, int, str]:
    """Machines of ``size`` processors the idle work fills, jobs too big for one, and how it was counted:
    job shapes packed into machines, or idle jobs divided by jobs_per_machine (the processors by default)."""
    if wanted.machines is not None:
        return wanted.machines, 0, "named machines asked for (DIRAC's SiteDirector, Slurm's ResumeProgram)"
    if wanted.shapes is not None and mt.jobs_per_machine is None:
        needed, too_big = rules.machines_for(wanted.shapes, size, mt.mb_per_processor * size,
                                             mt.disk_gb_per_processor * size * 1024 * 1024)
        return needed, too_big, f"idle jobs fill {needed} machines of {size} processors"
    per_machine = mt.jobs_per_machine or size
    return rules.demand_allowance(wanted.idle_jobs, per_machine, 0), 0, f"jobs_per_machine {per_machine}"


def _deletions(
    records: tuple[MachineRecord, ...], space: SpaceConfig, settings: Settings, tallies: dict[str, _Tally],
    now: datetime, kept: Counts | None = None,
) -> tuple[list[DeleteOrder], list[Decision], int]:
    """Delete orders, their decisions, and the processors our machines hold; fills the tallies.

    This loop runs once per machine per cycle, so a running machine with
    nothing wrong takes a fast path of plain comparisons; the rules are
    asked for their verdict and reason only where something may be due.
    With ``kept`` (the counts of these very records, core/counts.py), the
    running machines come counted, and the loop looks only at those due a
    look by now and at the machines that do not run.
    """
    deletes: list[DeleteOrder] = []
    decisions: list[Decision] = []
    held = 0
    looks = {name: _Look(mt, settings, tallies[name], now) for name, mt in space.machinetypes.items()}
    running = S.RUNNING
    space_open = space.shutdown_time is None or now < space.shutdown_time  # else every alive machine is checked
    counted = kept is not None and space_open and kept.stand_for(records, space, settings)
    if counted:
        assert kept is not None
        held, records = _counted(kept, looks, records, now)
    for record in records:
        state = record.state
        look = looks.get(record.machinetype)
        processors = record.processors
        started = record.started_at or record.created_at
        if state is running:
            if not counted or look is None:
                held += processors
            if look is not None:
                if not counted:
                    look.count_running(record, started, processors)
                # the fast path (most machines): plain comparisons, same answers as the rules
                deadline = record.shutdown_at
                beat = record.heartbeat_at
                if space_open and (deadline is None or now < deadline) and not record.delete_requested and (
                        not look.heartbeat or look.beat_fresh(beat) or (
                            started >= look.fizzle_cutoff and (beat is not None or started > look.silent_cutoff))):
                    continue
        elif state in HOLDS_PROCESSORS:
            held += processors
            if look is not None:
                look.count(record, state, processors)
        else:
            continue
        verdict = _delete_verdict(record, space, settings, space.shutdown_time, now)
        if verdict is not None:
            code, message, reason, rule, abort = verdict
            deletes.append(DeleteOrder(space.name, record.machinetype, record.name, record.cloud_id, code, message,
                                       reason, abort))
            decisions.append(Decision(Action.DELETE, space.name, record.machinetype, reason, record.name, rule))
    for each in looks.values():
        each.tally.weigh(each.share)
    return deletes, decisions, held


def _counted(kept: Counts, looks: Mapping[str, _Look], records: tuple[MachineRecord, ...],
             now: datetime) -> tuple[int, tuple[MachineRecord, ...]]:
    """The tallies of the running machines from ``kept``; the processors they hold, and the records still to look
    at now (the running ones due a look, and those that do not run), in their order."""
    for name, look in looks.items():
        kind, tally = kept.kinds[name], look.tally
        tally.running, tally.processors, tally.counted = kind.machines, kind.processors, kind.hs06
        tally.not_passed_fizzle = kind.young(look.fizzle_cutoff)
    wanted = kept.looks(now)
    if not wanted:  # a steady space: every machine runs and none is due a look
        return kept.held, ()
    return kept.held, tuple(compress(records, map(wanted.__contains__, map(NAME, records))))  # picked in C


HEARTBEAT_RULES = frozenset({"heartbeat", "first_heartbeat_timeout"})  # the deletes the breaker may hold back

# The mass-kill breaker: this many stale machines of a machinetype at least, and more than its
# max_stall_kill_fraction of its running ones stale or silent for over half of heartbeat_seconds, look like a
# failure on vcycle's side (the endpoint, the network), not the machines': none is deleted for its heartbeat.
STALL_ALARM_MACHINES = 3


def _stall_breaker(deletes: list[DeleteOrder], decisions: list[Decision], records: tuple[MachineRecord, ...],
                   space: SpaceConfig, tallies: dict[str, _Tally], now: datetime,
                   ) -> tuple[list[DeleteOrder], list[Decision]]:
    """The deletes and decisions, less the heartbeat deletes of machinetypes whose machines stall all at once,
    with a HOLD decision saying so for each of those."""
    stale: dict[str, int] = {}
    for decision in decisions:
        if decision.rule in HEARTBEAT_RULES:
            stale[decision.machinetype] = stale.get(decision.machinetype, 0) + 1
    tripped: dict[str, str] = {}
    for name, count in sorted(stale.items()):
        mt, running = space.machinetypes[name], tallies[name].running
        if count < STALL_ALARM_MACHINES:
            continue
        silent = _silent(records, mt, now) if mt.heartbeat_seconds > 0 else count
        if silent > mt.max_stall_kill_fraction * running:
            tripped[name] = (f"heartbeats stopped for {count} of {running} running machines at once ({silent} silent "
                             f"for over half of heartbeat_seconds {mt.heartbeat_seconds}; max_stall_kill_fraction "
                             f"{mt.max_stall_kill_fraction:g}): is the endpoint reachable? None deleted for its "
                             f"heartbeat; to delete them: vcycle machines delete --stalled {space.name} {name}")
    if not tripped:
        return deletes, decisions
    kept = [(o, d) for o, d in zip(deletes, decisions, strict=True)
            if not (d.rule in HEARTBEAT_RULES and d.machinetype in tripped)]
    holds = [Decision(Action.HOLD, space.name, name, why, rule="stall_breaker") for name, why in tripped.items()]
    return [o for o, _ in kept], [d for _, d in kept] + holds


def _silent(records: tuple[MachineRecord, ...], mt: MachinetypeConfig, now: datetime) -> int:
    """The machinetype's running machines that have not beaten for over half of heartbeat_seconds."""
    cutoff = now - timedelta(seconds=mt.heartbeat_seconds / 2)
    return sum(1 for r in records if r.state is S.RUNNING and r.machinetype == mt.name
               and (r.heartbeat_at is None or r.heartbeat_at < cutoff))


class _Look:
    """Per-machinetype cut-off times, so most machines need only comparisons."""

    __slots__ = ("fizzle_cutoff", "heartbeat", "share", "silent_cutoff", "stale_cutoff", "tally")

    def __init__(self, mt: MachinetypeConfig, settings: Settings, tally: _Tally, now: datetime) -> None:
        self.tally = tally
        self.share = mt.target_share
        self.fizzle_cutoff = now - timedelta(seconds=mt.fizzle_seconds)
        self.heartbeat = mt.heartbeat_file is not None
        first = timeouts.FIRST_HEARTBEAT.limit(settings, mt)  # a machine started before this without a heartbeat
        self.silent_cutoff = now - timedelta(seconds=first) if first > 0 else datetime.min.replace(tzinfo=now.tzinfo)
        self.stale_cutoff = now - timedelta(seconds=mt.heartbeat_seconds) if mt.heartbeat_seconds > 0 else None

    def count_running(self, record: MachineRecord, started: datetime, processors: int) -> None:
        """Count a running machine."""
        tally = self.tally
        tally.running += 1
        tally.processors += processors
        tally.hs06.append(record.hs06 or processors)
        if started > self.fizzle_cutoff:
            tally.not_passed_fizzle += 1

    def count(self, record: MachineRecord, state: MachineState, processors: int) -> None:
        """Count a machine that is not running."""
        tally = self.tally
        tally.processors += processors
        tally.hs06.append(record.hs06 or processors)
        if state in STARTING_STATES:
            tally.starting_processors += processors
            tally.starting_machines += 1
            tally.not_passed_fizzle += 1

    def beat_fresh(self, beat: datetime | None) -> bool:
        """Whether a heartbeat at ``beat`` is recent enough (any heartbeat, if heartbeat_seconds is 0)."""
        return beat is not None and (self.stale_cutoff is None or beat >= self.stale_cutoff)


def _delete_verdict(
    record: MachineRecord, space: SpaceConfig, settings: Settings, space_shutdown: datetime | None, now: datetime
) -> tuple[int | None, str, str, str, bool] | None:
    """(code, message, reason, rule, abort) if the record must be deleted now, else None."""
    state = record.state
    if state in TO_DELETE_STATES:
        own = f"{record.shutdown_code} {record.shutdown_text}" if record.shutdown_code is not None else ""
        what, rule = ("shut down", "stopped") if state is S.STOPPED else ("failed in the cloud", "failed")
        return (record.shutdown_code, record.shutdown_text or "", f"machine {what}" + (f" with '{own}'" if own else ""),
                rule, False)
    if state is S.DELETE_FAILED:
        if rules.delete_retry_due(record, settings, now):
            return None, "", f"retrying delete (attempt {record.delete_attempts + 1})", "delete_retry", False
        return None
    if state not in LISTED_ALIVE_STATES:
        return None
    if record.delete_requested:
        return (*rules.DELETED_BY_OPERATOR, record.delete_requested, "operator", False)
    deadline = record.shutdown_at
    if deadline is not None and now >= deadline:
        return (*rules.EXCEEDED_WALLCLOCK, f"past its shutdowntime {deadline.isoformat()}", "wallclock", False)
    if space_shutdown is not None and now >= space_shutdown:
        return (*rules.PASSED_SHUTDOWNTIME, f"past the space's shutdown_time {space_shutdown.isoformat()}",
                "space_shutdown", False)
    mt = space.machinetypes.get(record.machinetype)
    if state is S.STARTING:
        return _deadline(timeouts.LAUNCH, record, settings, mt, now)
    if mt is not None and mt.heartbeat_file is not None:
        if record.heartbeat_at is None and state is S.RUNNING:
            first = _deadline(timeouts.FIRST_HEARTBEAT, record, settings, mt, now)
            if first is not None:
                return first
        why = rules.heartbeat_stale(record, mt, now)
        return (*rules.HEARTBEAT_MISSING, why, "heartbeat", False) if why else None
    return None


def _deadline(row: timeouts.Timeout, record: MachineRecord, settings: Settings, mt: MachinetypeConfig | None,
              now: datetime) -> tuple[int | None, str, str, str, bool] | None:
    """The delete a passed deadline calls for, with its row's code and abort (its rule: the row's name)."""
    why = timeouts.expired(row, record, settings, mt, now)
    if why is None or row.code is None:
        return None
    return (*row.code, why, row.name + "_timeout", row.abort)


class _Candidate:
    """A machinetype that may still create this cycle."""

    __slots__ = ("allowance", "demand_note", "hs06", "live", "missing", "mt", "offer", "price", "processors",
                 "tally")

    def __init__(self, space: SpaceConfig, mt: MachinetypeConfig, tally: _Tally, offer: _Offer,
                 allowance: int | None, demand_note: str = "", live: Mapping[str, float] | None = None) -> None:
        self.offer = offer  # where it is made, and what a create falls through to for lack of capacity
        self.live = live or {}  # the cloud's own prices now, by offering key
        self.price = spend.price(space, mt, offer.offering, self.live)  # a machine-hour on it; None: not known
        self.missing = allowance  # machines the idle jobs still need, before the ramp-up curb
        self.mt = mt
        self.demand_note = demand_note  # how the demand was counted, for the reasons
        self.tally = tally
        self.processors = processors = offer.size
        if allowance is not None and allowance > 0 and mt.ramp_up_attenuation > 1:
            allowance = math.ceil(allowance / mt.ramp_up_attenuation)  # GlideinWMS-style: a share a cycle
        self.allowance = allowance  # machines the demand still asks for this cycle; None = no demand source
        self.hs06 = mt.hs06_per_processor * processors if mt.hs06_per_processor is not None else None


def _creations(
    snapshot: SpaceSnapshot, demand: Mapping[str, Demand], space: SpaceConfig, settings: Settings,
    tallies: dict[str, _Tally], held: int, now: datetime, decisions: list[Decision],
) -> list[CreateOrder]:
    """Create orders for this cycle, appending a Decision for each create and refusal."""
    def hold(machinetype: str, rule: str, reason: str) -> None:
        decisions.append(Decision(Action.HOLD, space.name, machinetype, reason, rule=rule))

    if space.shutdown_time is not None and now >= space.shutdown_time:
        hold("", "space_shutdown_time", f"space shutdown_time {space.shutdown_time.isoformat()} has passed: "
                                        "nothing is created")
        return []
    limit, source = rules.space_limit(space, snapshot.quota_processors)
    if limit is None:
        hold("", "no_limit", "no processors_limit configured and the cloud reports no quota: nothing is created")
        return []
    candidates = _candidates(snapshot, demand, space, tallies, hold, now)
    caps = spend.Caps.of(space, settings, snapshot.spend, snapshot.records, now, snapshot.prices)
    total = held + snapshot.foreign_processors
    cap = rules.creation_cap(limit, settings.max_create_fraction)
    created = 0
    creates: list[CreateOrder] = []
    while candidates:
        if total >= limit:
            hold("", "space_limit", f"{source} {total}/{limit} processors in space {space.name}"
                                    f" ({snapshot.foreign_processors} not ours)")
            break
        if created >= cap:
            hold("", "creation_cap", f"creation cap {created}/{cap} processors this cycle (max_create_fraction "
                                     f"{settings.max_create_fraction:g} of {limit})")
            break
        # the lowest weighted count goes first; a tie to the larger share, then by name (never by chance)
        best = min(candidates, key=lambda c: (c.tally.weighted, -c.mt.target_share, c.mt.name))
        refusal = _refusal(best, total, limit, source, space, snapshot, caps, now)
        if refusal is not None:
            hold(best.mt.name, *refusal)
            candidates.remove(best)
            continue
        creates.append(_create(best, space, caps, now))
        decisions.append(Decision(Action.CREATE, space.name, best.mt.name, creates[-1].reason, rule="share"))
        total += best.processors
        created += best.processors
        _count_create(best, caps, _charge(best, space, creates[-1]))
    if total < limit and created < cap:
        creates += _replacements(snapshot, demand, space, tallies, creates, limit - total, cap - created, source,
                                 caps, now, decisions)
    return creates


def _replacements(snapshot: SpaceSnapshot, demand: Mapping[str, Demand], space: SpaceConfig,
                  tallies: dict[str, _Tally], creates: list[CreateOrder], room: int, allowed: int, source: str,
                  caps: spend.Caps | None, now: datetime, decisions: list[Decision]) -> list[CreateOrder]:
    """Machines made ahead of the drifted ones they replace (core/retire.py drains those once these run): for each
    machinetype with drifted machines, enough for its work and as many more as its disruption budget lets
    retire at once, within every limit."""
    found: list[CreateOrder] = []
    kept = _kept(snapshot)
    made = kept.made if kept is not None else None
    if not retire.drifting(snapshot.records, space, made):  # no machine to replace (found in C, or kept)
        return found
    cooled = _cooled(snapshot, space, now)
    held: dict[str, list[MachineRecord]] = {}
    for r in snapshot.records:  # one pass, grouped by machinetype
        if r.state in HOLDS_PROCESSORS:
            held.setdefault(r.machinetype, []).append(r)
    for name, mt in sorted(space.machinetypes.items()):
        if name not in held:
            continue
        offer = _offering(space, mt, snapshot.flavors, cooled.get(name, {}), snapshot.prices)
        if mt.target_share <= 0 or name in snapshot.draining or "*" in snapshot.draining or \
                not isinstance(offer, _Offer):
            continue  # a HOLD for no flavor or a cooled offering is said once, by _candidates
        drifted = alive = working = draining = 0
        for r in held[name]:
            working += r.state in WORKING_STATES
            if r.state is S.DRAINING:
                draining += 1
                continue
            alive += 1
            drifted += bool(drift.drifted(r.made_by, mt.made_by))
        busy = retire.work(mt, demand.get(name), _needed(mt, demand.get(name), snapshot.flavors), offer.size)
        if not drifted or busy is None:
            continue
        alive += sum(1 for c in creates if c.machinetype == name)
        wanted = max(0, busy - draining) + min(drifted, max(1, mt.max_disrupting.of(working))) - alive
        c = _Candidate(space, mt, tallies[name], offer, None, live=snapshot.prices)
        for _ in range(max(0, wanted)):
            why = _refusal(c, 0, room, source, space, snapshot, caps, now) if c.processors <= allowed else \
                ("creation_cap", "creation cap reached this cycle")
            if why is not None:
                decisions.append(Decision(Action.HOLD, space.name, name, f"replacing drifted machines: {why[1]}",
                                          rule=why[0]))
                break
            order = identity.create_order(space, mt, c.processors, offer.offering, now, (
                f"ahead of the {drifted} drifted machines it replaces (the work needs {busy}, {alive} alive)"
                + (f"; {offer.passed}" if offer.passed else "") + _priced(c)),
                fallbacks=_fallbacks(c, space, caps))
            found.append(order)
            decisions.append(Decision(Action.CREATE, space.name, name, order.reason, rule="drift_replace"))
            room, allowed, alive = room - c.processors, allowed - c.processors, alive + 1
            _count_create(c, caps, _charge(c, space, order))
    return found


def _candidates(snapshot: SpaceSnapshot, demand: Mapping[str, Demand], space: SpaceConfig,
                tallies: dict[str, _Tally], hold: Callable[[str, str, str], None],
                now: datetime) -> list[_Candidate]:
    """Machinetypes that may create this cycle; the others get one HOLD decision each."""
    found: list[_Candidate] = []
    cooled = _cooled(snapshot, space, now)
    for name in sorted(space.machinetypes):
        mt = space.machinetypes[name]
        if mt.target_share <= 0.0:
            continue
        if name in snapshot.draining or "*" in snapshot.draining:
            hold(name, "operator_drained", "drained by an operator: no new machines")
            continue
        if name in snapshot.unrenderable:
            hold(name, "user_data", f"user-data cannot be rendered, nothing is created: {snapshot.unrenderable[name]}")
            continue
        offer = _offering(space, mt, snapshot.flavors, cooled.get(name, {}), snapshot.prices)
        if not isinstance(offer, _Offer):
            hold(name, *offer)
            continue
        if mt.demand is not None:
            wanted = demand.get(name) or Demand.unknown(f"demand source {mt.demand} reported nothing for {name}")
            if not wanted.known:
                hold(name, "demand_unknown", f"demand unknown: {wanted.reason}")
                continue
            size = offer.size
            needed, too_big, note = _machines_wanted(mt, wanted, size)
            if too_big:
                hold(name, "too_big", f"{too_big} idle jobs ask for more than one {size}-processor machine has "
                                      f"({mt.mb_per_processor * size} MB, {mt.disk_gb_per_processor * size} GB disk):"
                                      " not counted")
            found.append(_Candidate(space, mt, tallies[name], offer, needed - tallies[name].starting_machines, note,
                                    snapshot.prices))
            continue
        found.append(_Candidate(space, mt, tallies[name], offer, None, live=snapshot.prices))
    return found


def _refusal(c: _Candidate, total: int, limit: int, source: str, space: SpaceConfig, snapshot: SpaceSnapshot,
             caps: spend.Caps | None, now: datetime) -> tuple[str, str] | None:
    """(rule, reason) why candidate ``c`` may not create one more machine now, or None."""
    mt, tally, size = c.mt, c.tally, c.processors
    if total + size > limit:
        return "space_limit", f"{source} {total}/{limit} processors in space {space.name}: no room for {size} more"
    spent = snapshot.quota_hold
    if spent is not None and size >= spent.processors and total >= spent.held:
        return "quota", (f"quota: the cloud refused a create of {spent.processors} processors "
                         f"{rules.seconds(now - spent.since)}s ago with {spent.held} held ({spent.reason}); none of "
                         f"{spent.processors} or more until a listing shows fewer than {spent.held} held")
    if mt.processors_limit is not None and tally.processors + size > mt.processors_limit:
        return "machinetype_limit", f"machinetype processors_limit {tally.processors}/{mt.processors_limit}"
    if mt.max_starting_processors is not None and tally.starting_processors + size > mt.max_starting_processors:
        return ("starting_limit",
                f"max_starting_processors {tally.starting_processors}/{mt.max_starting_processors} starting")
    if c.allowance is not None and c.allowance <= 0 and c.missing is not None and c.missing > tally.created:
        return "ramp_up", (f"ramp-up: {tally.created} of the {c.missing} machines the idle jobs need are made this "
                           f"cycle (ramp_up_attenuation {mt.ramp_up_attenuation:g})")
    if c.allowance is not None and c.allowance <= 0:
        return "demand_satisfied", (f"demand satisfied: idle work needs no more machines ({tally.starting_machines} "
                                    f"starting, {c.demand_note})")
    if caps is not None:
        capped = caps.refusal(c.price, c.offer.offering)
        if capped is not None:
            return capped
    why = rules.backoff_hold(snapshot.backoffs.get(mt.name), mt, tally.not_passed_fizzle, now)
    if why is not None:
        return "backoff", why
    history = snapshot.launches.get(mt.name)
    if history:
        why = health.probe_hold(history, snapshot.records, tally.created, mt, snapshot.registered is not None, now)
    return ("launch_health", why) if why is not None else None


def _create(c: _Candidate, space: SpaceConfig, caps: spend.Caps | None, now: datetime) -> CreateOrder:
    mt = c.mt
    why = f"lowest weighted count per share ({c.tally.weighted:.3g}, target_share {mt.target_share:g})"
    if c.allowance is not None:
        why += f"; demand asks for {c.allowance} more"
    if c.offer.passed:
        why += f"; {c.offer.passed}"
    return identity.create_order(space, mt, c.processors, c.offer.offering, now, why + _priced(c),
                                 fallbacks=_fallbacks(c, space, caps))


def _priced(c: _Candidate) -> str:
    return f"; {c.price:g} an hour on {c.offer.offering}" if c.price is not None else ""


def _fallbacks(c: _Candidate, space: SpaceConfig, caps: spend.Caps | None) -> tuple[Offering, ...]:
    """The offerings a create may fall through to: under a cap, only those whose price the cap allows too."""
    if caps is None:
        return c.offer.fallbacks
    return tuple(o for o in c.offer.fallbacks if caps.allows(spend.price(space, c.mt, o, c.live)))


def _charge(c: _Candidate, space: SpaceConfig, order: CreateOrder) -> float | None:
    """What a create counts against the caps: the dearest of its offering and those it may fall through to (the
    next cycle's listing tells which it was)."""
    if c.price is None:
        return None
    return max([c.price, *(p for o in order.fallbacks if (p := spend.price(space, c.mt, o, c.live)) is not None)])


def _count_create(c: _Candidate, caps: spend.Caps | None, charge: float | None) -> None:
    if caps is not None and charge is not None:
        caps.add(charge)
    tally = c.tally
    tally.created += 1
    tally.processors += c.processors
    tally.starting_processors += c.processors
    tally.starting_machines += 1
    tally.not_passed_fizzle += 1
    tally.weighted += (c.hs06 or c.processors) / c.mt.target_share
    if c.allowance is not None:
        c.allowance -= 1

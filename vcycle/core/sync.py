"""Sync: what the cloud and the machines say, folded into vcycle's records.

The passive half of a cycle. It adopts tagged machines the store does not
know, moves records along the state table as the cloud reports them, notes
heartbeats and shutdown messages, marks what vanished as GONE, gives up
requests and deletes that took too long, and records aborts for backoff.
It decides nothing about creating or deleting: that is the planner's job.

A listing says more than what it shows, when it is known to have started
after a call could have finished (``listed_at``, the space's
``api_timeout_seconds`` after the call): a request it does not show was never
made (a crash between intent and create, or a create that failed unseen),
and is given up at once; a machine still shown alive after its delete did
not get the delete, which is sent again. A machine that vanishes without a
delete from vcycle is not counted as an abort, and many vanishing at once
are warned about (a cloud restarted empty is not a batch of failed pilots).

Pure: no clock, no I/O, no randomness; ``now`` is a parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from vcycle.core import interruptions, rules, timeouts
from vcycle.core.model import (
    Backoff,
    CloudMachine,
    CloudStatus,
    Cooldown,
    Heartbeat,
    MachineRecord,
    StatusChange,
    new_record,
    transition,
)
from vcycle.core.options import default_of
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.core.states import (
    ALIVE_STATES,
    LISTED_ALIVE_STATES,
    TERMINAL_STATES,
    WORKING_STATES,
    MachineState,
    can_transition,
)

S = MachineState
VANISHED_AT_ONCE = 2  # this many vanishing in one listing, a fifth of the machines or more, is warned about

# What a cloud status means for a record that the cloud lists.
OBSERVED: dict[CloudStatus, MachineState | None] = {
    CloudStatus.STARTING: S.STARTING,
    CloudStatus.RUNNING: S.RUNNING,
    CloudStatus.STOPPED: S.STOPPED,
    CloudStatus.FAILED: S.FAILED,
    CloudStatus.DELETING: None,  # being deleted: wait until it vanishes
    CloudStatus.DELETED: None,  # treated as not listed
    CloudStatus.UNKNOWN: None,  # no change on an unknown state
}


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Records after sync, the changes made, and what else was learnt."""

    records: tuple[MachineRecord, ...]
    changes: tuple[tuple[str, StatusChange], ...]
    backoffs: Mapping[str, Backoff]
    foreign_processors: int
    foreign_machines: int
    updated: tuple[MachineRecord, ...] = ()  # the records that differ from those given (new ones included)
    vanished: tuple[str, ...] = ()  # machines gone from the listing without a delete from vcycle
    warnings: tuple[str, ...] = ()  # for the report and the log: things an operator should look at
    aborted: tuple[str, ...] = ()  # machines whose stop this cycle counted as an abort (their backoff)
    cooldowns: tuple[Cooldown, ...] = ()  # offerings the cloud could not place a machine on: they cool


def is_ours(machine: CloudMachine, space: str, manager: str) -> bool:
    """Tagged for this space by this manager."""
    owner = machine.owner
    return owner is not None and owner.space == space and owner.manager == manager


def sync(
    records: Iterable[MachineRecord],
    cloud_machines: Iterable[CloudMachine],
    heartbeats: Mapping[str, Heartbeat],
    now: datetime,
    *,
    space: SpaceConfig,
    settings: Settings,
    backoffs: Mapping[str, Backoff] | None = None,
    registered: Mapping[str, bool] | None = None,
    listed_at: datetime | None = None,
    interrupted: Mapping[str, tuple[int, int]] | None = None,
) -> SyncResult:
    """Fold one observation of a space into its records.

    ``registered`` (machine name -> whether its batch daemon has work, for the machines registered in the
    batch system; None when unknown) keeps each running machine's ``registered_at`` and ``idle_since``.
    ``listed_at`` is when the listing began (None: unknown; then only the timeouts decide).
    ``interrupted`` (machinetype -> (interrupted, alive) in the last hour, GONE machines included: the store's
    ``interruptions``) decides whether an interrupted machine's end is an abort; without it, the records count.
    """
    ours, foreign_processors, foreign_machines = split(cloud_machines, space.name, settings.manager_name)
    records = tuple(records)
    work = SyncPass(space, settings, now, dict(backoffs or {}), listed_at, records, interrupted or {})
    result: list[MachineRecord] = []
    updated: list[MachineRecord] = []
    for record in records:
        synced = work.step(record, ours.pop(record.name) if record.name in ours else None,
                           heartbeats.get(record.name), registered)
        result.append(synced)
        if synced is not record:
            updated.append(synced)
    adopted = [work.adopt(ours[name], heartbeats.get(name)) for name in sorted(ours)]
    return work.result((*result, *adopted), (*updated, *adopted), foreign_processors, foreign_machines)


def split(cloud_machines: Iterable[CloudMachine], space: str, manager: str) -> tuple[dict[str, CloudMachine], int,
                                                                                      int]:
    """A listing's machines that are ours by name (the last of a name wins), and the processors and number of
    the others; machines the cloud shows as deleted count as neither."""
    ours: dict[str, CloudMachine] = {}
    foreign_processors = foreign_machines = 0
    for machine in cloud_machines:
        if machine.status is CloudStatus.DELETED:
            continue
        if is_ours(machine, space, manager):
            ours[machine.name] = machine
        else:
            foreign_machines += 1
            foreign_processors += machine.processors or 1
    return ours, foreign_processors, foreign_machines


class SyncPass:
    """The state of one sync run: accumulated changes and backoffs."""

    def __init__(self, space: SpaceConfig, settings: Settings, now: datetime, backoffs: dict[str, Backoff],
                 listed_at: datetime | None, records: tuple[MachineRecord, ...] = (),
                 interrupted: Mapping[str, tuple[int, int]] | None = None) -> None:
        self.space = space
        self.records = records  # the records as given: they count interruptions where the store did not
        self.interrupted = interrupted or {}
        self.settings = settings
        self.now = now
        self.backoffs = backoffs
        self.changes: list[tuple[str, StatusChange]] = []
        self.vanished: list[str] = []
        self.aborted: list[str] = []
        self.cooled: list[Cooldown] = []
        self.listed_at = listed_at
        self.bound = timedelta(seconds=space.api_timeout_seconds)  # by then any call has answered, or failed

    def step(self, record: MachineRecord, listed: CloudMachine | None, beat: Heartbeat | None,
             registered: Mapping[str, bool] | None) -> MachineRecord:
        """One record with what its listing, heartbeat and registration say (the record itself when nothing is new
        about it)."""
        if (listed is not None and OBSERVED[listed.status] is record.state and listed.id == record.cloud_id
                and (beat is None or (beat.at == record.heartbeat_at and beat.shutdown_message is None
                                      and (beat.interruption is None or record.interruption is not None)))
                and (not listed.processors or listed.processors == record.processors)):
            synced = record  # the common case: nothing new about this machine
        else:
            synced = self.one(record, listed, beat)
        if registered is not None and synced.state in WORKING_STATES:
            synced = _with_registration(synced, registered.get(synced.name), self.now)
        return synced

    def result(self, records: tuple[MachineRecord, ...], updated: tuple[MachineRecord, ...], foreign_processors: int,
               foreign_machines: int) -> SyncResult:
        """The pass's result, with a warning when many machines vanished at once."""
        warnings: tuple[str, ...] = ()
        if len(self.vanished) >= VANISHED_AT_ONCE:
            alive = sum(1 for r in records if r.state in LISTED_ALIVE_STATES) + len(self.vanished)
            if len(self.vanished) * 5 >= alive:
                warnings = (f"{len(self.vanished)} of {alive} machines vanished from the cloud at once without a "
                            f"delete from vcycle: was the cloud restarted empty, or were they deleted by hand? (not "
                            f"counted as aborts)",)
        return SyncResult(records, tuple(self.changes), self.backoffs, foreign_processors, foreign_machines,
                          updated, tuple(self.vanished), warnings, tuple(self.aborted), tuple(self.cooled))

    def after(self, since: datetime) -> int | None:
        """Seconds from ``since`` to the listing's start, if the listing began a call's bound after it."""
        if self.listed_at is None or self.listed_at - since < self.bound:
            return None
        return int((self.listed_at - since).total_seconds())

    def move(self, record: MachineRecord, target: MachineState, reason: str, **changes: object) -> MachineRecord:
        moved = transition(record, target, self.now, reason, **changes)
        assert moved.last is not None
        self.changes.append((moved.name, moved.last))
        return moved

    def one(self, record: MachineRecord, machine: CloudMachine | None, heartbeat: Heartbeat | None) -> MachineRecord:
        if record.state in TERMINAL_STATES:
            return record
        if heartbeat is not None:
            record = _with_heartbeat(record, heartbeat)
        if machine is None:
            return self.unlisted(record)
        if record.cloud_id != machine.id or (machine.processors and machine.processors != record.processors):
            processors = machine.processors or record.processors
            record = dataclasses.replace(record, cloud_id=machine.id, processors=processors)
        return self.listed(record, machine)

    def unlisted(self, record: MachineRecord) -> MachineRecord:
        state = record.state
        if state is S.REQUESTED:
            waited = self.after(record.created_at)
            if waited is not None:  # the create could have finished: the listing would show it
                return self.move(record, S.CREATE_FAILED, f"not in a complete listing taken {waited}s after the "
                                 f"request (api_timeout_seconds {self.space.api_timeout_seconds:g}): never made")
            why = timeouts.expired(timeouts.REQUEST, record, self.settings, None, self.now)
            return self.move(record, S.CREATE_FAILED, why) if why else record
        if state is S.CREATE_FAILED:
            why = timeouts.expired(timeouts.REQUEST, record, self.settings, None, self.now)
            return self.move(record, S.GONE, "request closed: " + why) if why else record
        if state in ALIVE_STATES and record.interruption is not None:  # the cloud took it back, as it had said
            self.note_abort(record, self.now)
            return self.move(record, S.GONE, f"gone from the cloud's listing after its interruption notice "
                             f"({record.interruption})", stopped_at=record.stopped_at or self.now)
        if state in ALIVE_STATES and record.shutdown_code is not None:  # it said why it stopped: its word counts
            self.note_abort(record, self.now)
        elif state in ALIVE_STATES:  # no delete of ours, no shutdown seen: not the machine's fault, not an abort
            self.vanished.append(record.name)
            return self.move(record, S.GONE, "vanished from the cloud's listing without a delete from vcycle (not "
                             "counted as an abort)", stopped_at=record.stopped_at or self.now)
        return self.move(record, S.GONE, "no longer listed by the cloud", stopped_at=record.stopped_at or self.now)

    def listed(self, record: MachineRecord, machine: CloudMachine) -> MachineRecord:
        target = OBSERVED[machine.status]
        detail = f" ({machine.detail})" if machine.detail else ""
        if record.state is S.DELETING:
            waited = self.after(record.last_delete_at or record.state_since)
            if waited is not None and machine.status not in (CloudStatus.DELETING, CloudStatus.UNKNOWN):
                return self.move(record, S.DELETE_FAILED, f"the delete did not reach the cloud: still listed as "
                                 f"{machine.status.value} {waited}s after it; sent again", last_delete_at=None)
            why = timeouts.expired(timeouts.DELETING, record, self.settings, None, self.now)
            return self.move(record, S.DELETE_FAILED, why) if why else record
        if target is None or target is record.state or not can_transition(record.state, target):
            return record
        changes: dict[str, object] = {}
        if target is S.RUNNING and record.started_at is None:
            changes["started_at"] = self.now
        if target is S.FAILED and machine.no_capacity and record.state in ALIVE_STATES:
            self.cooled.append(Cooldown(record.machinetype, record.flavor or "", self.now, machine.no_capacity))
            return self.move(record, target, f"{rules.NO_CAPACITY}: the cloud could not place it on "
                             f"{record.flavor or 'its offering'} ({machine.no_capacity}): the offering cools, not an "
                             "abort", stopped_at=record.stopped_at or self.now)
        if target in (S.STOPPED, S.FAILED) and record.stopped_at is None:
            changes["stopped_at"] = self.now
            if record.state in ALIVE_STATES:
                self.note_abort(record, self.now)
        return self.move(record, target, f"cloud reports {machine.status.value}{detail}", **changes)

    def note_abort(self, record: MachineRecord, stopped_at: datetime) -> None:
        mt = self.space.machinetypes.get(record.machinetype)
        if mt is None or record.state is S.REQUESTED:
            return
        if record.interruption is not None:  # the cloud's doing, not the machine's: unless it happens to most
            counts = self.interrupted.get(record.machinetype) or interruptions.tally(self.records, record.machinetype,
                                                                                      self.now)
            why = interruptions.storm(record.machinetype, counts, mt.max_interruption_fraction)
        else:
            why = rules.abort_reason(record, mt.fizzle_seconds, stopped_at)
        if why is not None:
            self.aborted.append(record.name)
            found = Backoff(record.machinetype, stopped_at, why)
            self.backoffs[record.machinetype] = rules.next_backoff(self.backoffs.get(record.machinetype), found, mt)

    def adopt(self, machine: CloudMachine, heartbeat: Heartbeat | None) -> MachineRecord:
        assert machine.owner is not None
        state = OBSERVED[machine.status] or S.STARTING
        mt = self.space.machinetypes.get(machine.owner.machinetype)
        created = machine.created_at or self.now
        wallclock = mt.max_wallclock_seconds if mt else default_of(MachinetypeConfig, "max_wallclock_seconds")
        record = new_record(
            name=machine.name, space=self.space.name, machinetype=machine.owner.machinetype, state=state,
            processors=machine.processors or (mt.min_processors if mt else default_of(MachinetypeConfig,
                                                                                      "min_processors")),
            now=self.now,
            request_id=machine.owner.request_id,
            reason=f"adopted: tagged machine listed as {machine.status.value} but not in the store",
            cloud_id=machine.id, manager=machine.owner.manager, zone=machine.zone, flavor=machine.flavor,
            started_at=self.now if state is S.RUNNING else None,
            stopped_at=self.now if state in (S.STOPPED, S.FAILED) else None,
            shutdown_at=rules.shutdown_deadline(created, wallclock, self.space.shutdown_time),
        )
        record = dataclasses.replace(record, created_at=created)
        assert record.last is not None
        self.changes.append((record.name, record.last))
        return _with_heartbeat(record, heartbeat) if heartbeat is not None else record


def _with_registration(record: MachineRecord, busy: bool | None, now: datetime) -> MachineRecord:
    """The record with what the batch system says: registered (busy or idle since when), or not there."""
    if busy is None:  # not registered (yet, or any more): an idle time no longer runs
        return record if record.idle_since is None else dataclasses.replace(record, idle_since=None)
    registered_at = record.registered_at or now
    idle_since = None if busy else (record.idle_since or now)
    if (registered_at, idle_since) == (record.registered_at, record.idle_since):
        return record
    return dataclasses.replace(record, registered_at=registered_at, idle_since=idle_since)


def _with_heartbeat(record: MachineRecord, heartbeat: Heartbeat) -> MachineRecord:
    """The record with the machine's latest heartbeat and shutdown message."""
    changes: dict[str, object] = {}
    if heartbeat.at is not None and heartbeat.at != record.heartbeat_at:
        changes["heartbeat_at"] = heartbeat.at
    if heartbeat.interruption is not None and record.interruption is None:
        changes["interruption"] = heartbeat.interruption
        changes["interrupted_at"] = heartbeat.interruption_at or heartbeat.at
    if heartbeat.shutdown_message is not None:
        code, text = rules.parse_shutdown_message(heartbeat.shutdown_message)
        if (code, text) != (record.shutdown_code, record.shutdown_text):
            changes["shutdown_code"], changes["shutdown_text"] = code, text
    return dataclasses.replace(record, **changes) if changes else record  # type: ignore[arg-type]

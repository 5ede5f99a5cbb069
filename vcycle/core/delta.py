"""Incremental sync: a listing diffed against the last one, only the records it changes looked at.

A steady space lists the same machines in the same states cycle after cycle,
and most of its records come back from the store as the very objects the last
sync gave out. ``Seen`` keeps what the last pass saw (the listing, the
heartbeats, the batch system's word) and gave out (the records); the next pass
finds what differs by object identity and set differences, which run in C
over the whole space, and hands only these records to sync's own per-record
step (core/sync.py):

- records that are not the objects the last pass gave out (the executor, an
  operator or another writer changed them), and new ones;
- machines listed anew or no longer listed (a listed machine that is a new
  object but equal to the last one, as an SDK's parse makes every cycle, is
  not a change), and tagged machines no record knows (adopted);
- heartbeats newer than the last pass's, and machines the batch system's
  word on changed;
- records whose fate depends on the clock alone (REQUESTED, CREATE_FAILED,
  DELETING: the request, listing and delete timeouts);
- machines adopted by the last pass (sync puts the batch system's word on a
  record from the pass after it adopts it).

Every other record is given out as it came in: the per-record step is
idempotent on it (the same record, listing, heartbeat and registration give
back the same record), so the result equals a full pass's. A full pass
(``sync.sync``) still runs every ``full_sync_cycles`` passes, the first time,
after any error (the caller drops its ``Seen``), when the configuration
changed, when the batch system's word comes or goes, and when the listing
holds one of our names twice; tests/unit/test_delta.py checks both passes
against each other over random histories.

Pure: no clock, no I/O, no randomness; ``now`` is a parameter. ``Seen`` is
mutable and belongs to one space's cycles (SpaceContext keeps it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from itertools import compress
from operator import attrgetter, is_, is_not

from vcycle.core import counts
from vcycle.core.model import Backoff, CloudMachine, CloudStatus, Heartbeat, MachineRecord
from vcycle.core.sections import Settings, SpaceConfig
from vcycle.core.states import MachineState
from vcycle.core.sync import SyncPass, SyncResult, is_ours, split, sync

NAME = attrgetter("name")

# The states whose sync depends on the clock, not only on what is listed: looked at every pass.
CLOCKED = frozenset({MachineState.REQUESTED, MachineState.CREATE_FAILED, MachineState.DELETING})


class Seen:
    """What one space's last sync saw and gave out; the next pass diffs against it."""

    __slots__ = ("again", "beats", "clocked", "counts", "fixed", "foreign_machines", "foreign_processors", "last",
                 "listed", "ours", "ours_count", "passes", "records", "registered", "settings", "space")

    def __init__(self, space: SpaceConfig, settings: Settings, listing: Sequence[CloudMachine],
                 beats: Mapping[str, Heartbeat], registered: Mapping[str, bool] | None,
                 records: tuple[MachineRecord, ...], result: SyncResult) -> None:
        """After a full pass over ``records``, whose result is ``result``. The mappings given are kept as they are:
        the caller changes none of them afterwards (the store hands out a new one when something changed)."""
        self.space = space
        self.settings = settings
        self.listed = list(listing)  # as listed, in order (kept alive, so their ids stay unique)
        self.ours, self.foreign_processors, self.foreign_machines = split(listing, space.name, settings.manager_name)
        self.ours_count = sum(1 for m in listing if m.status is not CloudStatus.DELETED
                              and is_ours(m, space.name, settings.manager_name))
        self.beats = beats  # name -> heartbeat, as last seen (kept alive, so ids stay unique)
        self.registered = dict(registered) if registered is not None else None
        self.records = records  # the records given to the last pass
        self.fixed = not result.updated  # ... and it gave them out as they came: the next may be these again
        self.last = {r.name: r for r in result.records}  # what the pass gave out, by name
        self.clocked = {r.name for r in result.records if r.state in CLOCKED}
        self.again = {r.name for r in result.records[len(records):]}  # adopted: the batch system's word comes next
        self.passes = 0  # incremental passes since the last full one
        self.counts = counts.Counts(space, settings, result.records)  # for the planner

    def full_due(self, space: SpaceConfig, settings: Settings, registered: Mapping[str, bool] | None,
                 every: int) -> str | None:
        """Why the next pass must be a full one, or None."""
        if self.passes + 1 >= every:
            return f"full_sync_cycles {every}"
        if space is not self.space or settings is not self.settings:
            return "the configuration changed"
        if (registered is None) != (self.registered is None):
            return "the batch system's word came or went"
        return None


def sync_since(
    seen: Seen | None,
    records: Sequence[MachineRecord],
    cloud_machines: Sequence[CloudMachine],
    heartbeats: Mapping[str, Heartbeat],
    now: datetime,
    *,
    space: SpaceConfig,
    settings: Settings,
    every: int,
    backoffs: Mapping[str, Backoff] | None = None,
    registered: Mapping[str, bool] | None = None,
    listed_at: datetime | None = None,
    interrupted: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[SyncResult, Seen, int | None]:
    """Sync's result for this observation, the ``Seen`` for the next pass, and how many records this pass looked
    at (None: a full pass). ``seen`` is the last pass's (None: none, or it failed); ``every``: full_sync_cycles.

    The result equals ``sync.sync``'s on the same arguments."""
    records = tuple(records)
    listing = list(cloud_machines)
    if seen is None or seen.full_due(space, settings, registered, every) is not None:
        return _full(records, listing, heartbeats, now, space, settings, backoffs, registered, listed_at,
                     interrupted)
    found = _touched(seen, records, listing, heartbeats, registered, space, settings)
    if found is None:
        return _full(records, listing, heartbeats, now, space, settings, backoffs, registered, listed_at,
                     interrupted)
    touched, names = found
    work = SyncPass(space, settings, now, dict(backoffs or {}), listed_at, records, interrupted or {})
    before = seen.last
    last = before
    if touched:
        last = before.copy()
        ours = seen.ours
        for record in compress(records, map(touched.__contains__, map(NAME, records))):
            name = record.name
            last[name] = work.step(record, ours.get(name), heartbeats.get(name), registered)
    adopted = [work.adopt(seen.ours[name], heartbeats.get(name)) for name in sorted(seen.ours.keys() - names)]
    looked = touched | {r.name for r in adopted}
    if records is seen.records and seen.fixed and not looked:  # a steady space: nothing new, nothing to redo
        result = work.result(records, (), seen.foreign_processors, seen.foreign_machines)
        seen.counts.records = records  # the same records, one by one
    else:
        given = tuple(map(last.__getitem__, map(NAME, records)))
        updated = list(compress(given, map(is_not, given, records)))
        result = work.result((*given, *adopted), (*updated, *adopted), seen.foreign_processors,
                             seen.foreign_machines)
        seen.last = dict(zip(map(NAME, result.records), result.records, strict=True))
        seen.fixed = not result.updated
        counts.replace_all(seen.counts, before, seen.last, looked | (before.keys() - seen.last.keys()),
                           result.records)
    seen.records = records
    seen.again = {r.name for r in adopted}
    seen.clocked = {n for n in seen.clocked | looked if n in seen.last and seen.last[n].state in CLOCKED}
    seen.beats = heartbeats
    seen.registered = dict(registered) if registered is not None else None
    seen.passes += 1
    return result, seen, len(looked)


def _full(records: tuple[MachineRecord, ...], listing: list[CloudMachine], heartbeats: Mapping[str, Heartbeat],
          now: datetime, space: SpaceConfig, settings: Settings, backoffs: Mapping[str, Backoff] | None,
          registered: Mapping[str, bool] | None, listed_at: datetime | None,
          interrupted: Mapping[str, tuple[int, int]] | None) -> tuple[SyncResult, Seen, None]:
    result = sync(records, listing, heartbeats, now, space=space, settings=settings, backoffs=backoffs,
                  registered=registered, listed_at=listed_at, interrupted=interrupted)
    return result, Seen(space, settings, listing, heartbeats, registered, records, result), None


def _touched(seen: Seen, records: tuple[MachineRecord, ...], listing: list[CloudMachine],
             heartbeats: Mapping[str, Heartbeat], registered: Mapping[str, bool] | None, space: SpaceConfig,
             settings: Settings) -> tuple[set[str], Collection[str]] | None:
    """The names of the records this pass must look at, and the names of all records; None where only a full
    pass can tell (a machine object listed twice, one of our names listed twice). Brings ``seen``'s listing up
    to date."""
    touched: set[str] | None = set()
    if len(listing) != len(seen.listed) or not all(map(is_, listing, seen.listed)):  # else listed as last time
        objects = dict(zip(map(id, listing), listing, strict=True))
        if len(objects) != len(listing):
            return None
        touched = _relisted(seen, objects, space, settings)
        if touched is None:
            return None
        seen.listed = listing
    assert touched is not None
    names: Collection[str]
    if records is seen.records and seen.fixed:  # the very records the last pass was given and gave out
        names = seen.last.keys()
    else:
        names = set(map(NAME, records))
        # not the objects the last pass gave out (picked in C)
        touched.update(map(NAME, compress(records, map(is_not, records, map(seen.last.get, map(NAME, records))))))
    last_beats = seen.beats
    if heartbeats is not last_beats:
        fresh = dict(zip(map(id, heartbeats.values()), heartbeats.keys(), strict=True))
        touched.update(fresh[i] for i in fresh.keys() - set(map(id, last_beats.values())))
    if registered is not None and seen.registered is not None and registered != seen.registered:
        touched.update(name for name, _ in registered.items() ^ seen.registered.items())
    touched |= seen.clocked
    touched |= seen.again
    touched.intersection_update(names)
    return touched, names


def _relisted(seen: Seen, objects: dict[int, CloudMachine], space: SpaceConfig, settings: Settings) -> set[str] | None:
    """The names of ours listed anew or no longer listed; brings ``seen``'s listing and counts up to date. None
    where one of our names is listed twice (only a full pass can tell which counts)."""
    touched: set[str] = set()
    before = dict(zip(map(id, seen.listed), seen.listed, strict=True))
    gone = [before[i] for i in before.keys() - objects.keys()]
    new = [objects[i] for i in objects.keys() - before.keys()]
    if not gone and not new:
        return touched
    manager, ours = settings.manager_name, seen.ours
    was: dict[str, CloudMachine] = {}
    for machine in gone:
        if machine.status is CloudStatus.DELETED:
            continue
        if is_ours(machine, space.name, manager):
            seen.ours_count -= 1
            if ours.get(machine.name) is machine:
                was[machine.name] = ours.pop(machine.name)
        else:
            seen.foreign_machines -= 1
            seen.foreign_processors -= machine.processors or 1
    for machine in new:
        if machine.status is CloudStatus.DELETED:
            continue
        if is_ours(machine, space.name, manager):
            seen.ours_count += 1
            ours[machine.name] = machine
            if was.get(machine.name) != machine:  # an equal machine parsed anew is no change
                touched.add(machine.name)
            was.pop(machine.name, None)
        else:
            seen.foreign_machines += 1
            seen.foreign_processors += machine.processors or 1
    touched.update(was)  # no longer listed
    return touched if seen.ours_count == len(ours) else None

"""Accounting at the end of a space's cycle: APEL records and VacMon messages for the machines that ended.

The machines that became GONE are read back from the store (what was
committed, so nothing sync saw only in memory is claimed), their APEL
records and VacMon machine messages are sent, and then the store marks them
accounted and adds them to their months in one transaction. Anything left
unaccounted (a crash, a queue that could not be written) is taken up at
start and at every housekeeping pass. Month summaries follow, each at most
once per SUMMARY_SECONDS while its figures keep changing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from vcycle.accounting import apel, vacmon
from vcycle.core import spend
from vcycle.core.model import MachineRecord, ReportError
from vcycle.core.sections import Config, SpaceConfig
from vcycle.core.usage import MonthUsage, usage
from vcycle.errors import StoreError
from vcycle.store import Store
from vcycle.store.accounts import Ledger

log = logging.getLogger(__name__)
SUMMARY_SECONDS = 3600


def cloud_type(space: SpaceConfig) -> str:
    return f"vcycle ({space.api})"


def account(config: Config, space: SpaceConfig, store: Store, now: datetime,
            ended: Sequence[MachineRecord] | None = None) -> list[ReportError]:
    """Account the space's GONE machines not yet accounted (``ended``: only these, which the caller knows to be
    committed GONE; by default all the store holds), then send the month summaries that are due; the errors
    met (the machines stay unaccounted and are tried again)."""
    ledger = Ledger(store)
    settings = config.settings
    gone = ledger.unaccounted(space.name) if ended is None else sorted(
        ended, key=lambda r: (r.state_since, r.name))  # as the store hands them out: oldest first
    months: list[MonthUsage] | None = None  # the months due a summary, where read with the mark
    if gone:
        usages = [u for u in (usage(r, space.machinetypes.get(r.machinetype)) for r in gone) if u is not None]
        records = [apel.job_record(u, space, space.machinetypes[u.machinetype], settings.manager_name)
                   for u in usages]
        try:
            _deliver(settings.apel_archive_dir, settings.apel_outgoing_dir if space.gocdb_sitename else None,
                     apel.messages(apel.JOB_HEADER, records))
        except OSError as exc:
            log.error("space=%s APEL records of %d machine(s) not written, tried again later: %s", space.name,
                      len(records), exc)
            return [ReportError("accounting", space.name, f"APEL records not written: {exc}")]
        by_name = {u.machine: u for u in usages}
        host = vacmon.host(settings.manager_name, settings.state_dir) if space.vacmon_hostport else None
        if host is not None:
            vacmon.send([vacmon.machine_message(space, r, by_name.get(r.name), host, now) for r in gone],
                        space.vacmon_hostport, space.name)
        try:  # the mark, and the read of the months due a summary, in one transaction
            marked, months = ledger.account_with_unsent(space.name, [r.name for r in gone], usages, now,
                                                        _costs(space, gone), now - timedelta(seconds=SUMMARY_SECONDS))
        except StoreError as exc:
            log.error("space=%s accounted machines not marked (their records may be sent twice): %s", space.name,
                      exc)
            return [ReportError("accounting", space.name, f"accounted machines not marked: {exc}")]
        log.info("space=%s accounted %d machine(s), %d with an APEL record", space.name, len(marked),
                 sum(1 for u in usages if u.machine in marked))
    return _summaries(config, space, ledger, now, months)


def _costs(space: SpaceConfig, gone: Sequence[MachineRecord]) -> dict[str, dict[str, float]]:
    """machine -> month -> what it cost, for the gone machines with a price (core/spend.py)."""
    found = {}
    for record in gone:
        per_hour = spend.record_price(space, record)
        if per_hour is not None:
            found[record.name] = spend.by_month(record, per_hour)
    return found


def _summaries(config: Config, space: SpaceConfig, ledger: Ledger, now: datetime,
               months: Sequence[MonthUsage] | None = None) -> list[ReportError]:
    """Send the month summaries that are due (``months``, where read already with the accounting's mark)."""
    if months is None:
        months = ledger.unsent(space.name, now - timedelta(seconds=SUMMARY_SECONDS))
    if not months:
        return []
    records = [apel.summary_record(m, space, space.machinetypes.get(m.machinetype), cloud_type(space))
               for m in months]
    try:
        _deliver(config.settings.apel_archive_dir,
                 config.settings.apel_outgoing_dir if space.gocdb_sitename else None,
                 apel.messages(apel.SUMMARY_HEADER, records))
    except OSError as exc:
        log.error("space=%s APEL summaries not written, tried again later: %s", space.name, exc)
        return [ReportError("accounting", space.name, f"APEL summaries not written: {exc}")]
    ledger.sent(months, now)
    return []


def _deliver(archive: str | None, outgoing: str | None, messages: Sequence[str]) -> None:
    """Every message to the archive and, if given, to the outgoing queue; OSError if one could not be. A
    configuration always has an archive (config/load.py); only a simulation keeps none (nothing reads it)."""
    for message in messages:
        if outgoing:
            apel.Queue(outgoing).add(message)
        if archive:
            apel.Queue(archive).add(message)


def status(space: SpaceConfig, records: Sequence[MachineRecord], settings_name: str, state_dir: str,
           now: datetime) -> int:
    """The space's VacMon factory and machinetype messages, sent to its listeners; datagrams sent."""
    if not space.vacmon_hostport:
        return 0
    host = vacmon.host(settings_name, state_dir)
    messages = [vacmon.factory_message(space, records, host, now),
                *vacmon.machinetype_messages(space, records, host, now)]
    return vacmon.send(messages, space.vacmon_hostport, space.name)

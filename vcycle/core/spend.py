"""Spend: what machines cost, and the caps a create stays within.

A machine-hour's price is the most specific of its space's
``offering_prices`` that matches its offering (flavor, zone, capacity type),
else its machinetype's ``price_per_hour``, else unknown. A machine costs its
price from its creation until it is gone, whatever it did meanwhile: that
is how clouds bill. The *burn* is what the space's machines not yet gone
cost an hour.

The caps, each a most the burn may be after one more create:

- ``max_cost_per_hour`` of the space;
- ``budget_per_month`` of the space, paced: what is left of the month's
  budget spread over what is left of the month (UTC). Spending at that rate
  or below never runs ahead of the month's elapsed share, so a budget is not
  spent in its first week;
- ``[settings] budget_per_month``, paced the same over every space; the
  headroom (the site's paced rate less what every space burns) is split
  evenly between the spaces that share it, so spaces planned at once cannot
  spend it twice.

Where a cap is set, a machine of unknown price is not made: its cost could
not be kept under the cap.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from vcycle.core.model import MachineRecord, Offering, Spend, most_specific
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.core.states import MachineState

HOUR = 3600.0
MOVES = 32  # a Standing moved this many times is counted again one by one (its sums start afresh)


def price(space: SpaceConfig, mt: MachinetypeConfig | None, offering: Offering,
          live: Mapping[str, float] | None = None) -> float | None:
    """A machine-hour's price on ``offering``: the cloud's own current price of it (``live``, by offering key:
    EC2's spot price), else the most specific match in the space's offering_prices (the first listed among
    equals), else the machinetype's price_per_hour, else None."""
    if live and offering.key in live:
        return live[offering.key]
    found = most_specific(space.offering_prices, offering)
    if found is not None:
        return found
    return mt.price_per_hour if mt is not None else None


def priced(space: SpaceConfig, settings: Settings) -> bool:
    """Whether any cap asks the planner to count money in ``space``."""
    return (space.max_cost_per_hour is not None or space.budget_per_month is not None
            or settings.budget_per_month is not None)


def record_price(space: SpaceConfig, record: MachineRecord, live: Mapping[str, float] | None = None) -> float | None:
    return price(space, space.machinetypes.get(record.machinetype),
                 Offering(record.flavor, record.zone, record.capacity), live)


def month(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) ``now`` lies in: its first moment and the next month's."""
    if now.tzinfo is not UTC:
        now = now.astimezone(UTC)
    return _month(now.year, now.month)


@lru_cache(maxsize=16)
def _month(year: int, number: int) -> tuple[datetime, datetime]:
    """The month ``number`` of ``year`` (UTC): its first moment and the next month's (asked many times a cycle,
    made once)."""
    start = datetime(year, number, 1, tzinfo=UTC)
    return start, datetime(year + 1, 1, 1, tzinfo=UTC) if number == 12 else datetime(year, number + 1, 1, tzinfo=UTC)


def gone_at(record: MachineRecord) -> datetime | None:
    """When the machine stopped costing: when it was seen gone; None while it may still cost."""
    if record.state is MachineState.GONE:
        return record.state_since
    if record.state is MachineState.CREATE_FAILED:
        return record.created_at  # never made
    return None


def cost(record: MachineRecord, per_hour: float, start: datetime, end: datetime) -> float:
    """What the machine cost between ``start`` and ``end`` at ``per_hour``."""
    until = gone_at(record)
    until = end if until is None else min(until, end)
    since = max(record.created_at, start)
    return per_hour * max(0.0, (until - since).total_seconds()) / HOUR


def by_month(record: MachineRecord, per_hour: float) -> dict[str, float]:
    """What a gone machine cost in each month (YYYY-MM) it lived in; nothing while it may still cost."""
    end = gone_at(record)
    found: dict[str, float] = {}
    at = record.created_at
    while end is not None and at < end:
        first, following = month(at)
        found[f"{first:%Y-%m}"] = cost(record, per_hour, first, following)
        at = following
    return found


def known(space: SpaceConfig) -> bool:
    """Whether the space names any price: then its spend is counted and shown."""
    return bool(space.offering_prices) or any(mt.price_per_hour is not None for mt in space.machinetypes.values())


@dataclass(frozen=True, slots=True)
class Figures:
    """A space's month so far: what an operator reads in status, the API and the metrics."""

    month: str  # YYYY-MM (UTC)
    to_date: float  # spent since the month began
    burn: float  # what its machines not yet gone cost an hour
    projected: float  # to_date and the burn for the rest of the month
    unpriced: int  # machines not gone whose price is not known (not counted)

    def as_dict(self) -> dict[str, object]:
        return {"month": self.month, "to_date": round(self.to_date, 4), "burn_per_hour": round(self.burn, 4),
                "projected_month": round(self.projected, 4), "unpriced_machines": self.unpriced}


def figures(space: SpaceConfig, accounted: float, unaccounted: Iterable[MachineRecord] | Standing, now: datetime,
            live: Mapping[str, float] | None = None) -> Figures:
    """The space's month: ``accounted`` (the ledger's cost of its machines accounted this month) and the cost of
    the machines not accounted yet, from their records (or their Standing at ``now``)."""
    start, end = month(now)
    found = unaccounted if isinstance(unaccounted, Standing) else Standing.of(space, unaccounted, now, live)
    to_date = accounted + found.spent
    return Figures(f"{start:%Y-%m}", to_date, found.burn, to_date + found.burn * (end - now).total_seconds() / HOUR,
                   found.unpriced)


def month_costs(space: SpaceConfig, records: Iterable[MachineRecord], now: datetime,
                live: Mapping[str, float] | None = None) -> tuple[float, float, int]:
    """(what the records cost this month until ``now``, what those not gone burn an hour, how many of them have
    no price)."""
    found = Standing.of(space, records, now, live)
    return found.spent, found.burn, found.unpriced


@dataclass(frozen=True, slots=True)
class Standing:
    """What a space's records cost this month as of ``at`` (month_costs), kept to be carried forward: while the
    very same records stand and the prices are the same, a later ``now`` of the same month costs what ``at``
    did and the burn for every hour since, with no pass over the records."""

    records: object  # the sequence it was counted from: the same object, or counted again
    live: Mapping[str, float] | None
    start: datetime  # the month's first moment
    at: datetime
    spent: float
    burn: float
    unpriced: int
    steady: bool  # every machine began costing, and every gone one stopped, by ``at``: it may be carried forward
    unaccounted: bool = False  # only the records not accounted yet were counted
    moves: int = 0  # how many changes of records it was moved through since it was counted one by one

    @classmethod
    def of(cls, space: SpaceConfig, records: Iterable[MachineRecord], now: datetime,
           live: Mapping[str, float] | None = None, *, unaccounted: bool = False) -> Standing:
        """The records' month until ``now`` (``unaccounted``: of those not accounted yet), counted one by one."""
        start, _ = month(now)
        spent = burn = 0.0
        unpriced = 0
        steady = True
        prices: dict[tuple[str, str | None, str | None, str | None], float | None] = {}  # few offerings, many
        for record in records:
            if unaccounted and record.accounted_at is not None:
                continue
            key = (record.machinetype, record.flavor, record.zone, record.capacity)
            per_hour = prices[key] if key in prices else prices.setdefault(key, record_price(space, record, live))
            until = gone_at(record)
            if per_hour is None:
                unpriced += until is None
                continue
            spent += cost(record, per_hour, start, now)
            steady = steady and record.created_at <= now and (until is None or until <= now)
            if until is None:
                burn += per_hour
        return cls(records, live, start, now, spent, burn, unpriced, steady, unaccounted)

    def carried(self, records: object, now: datetime, live: Mapping[str, float] | None) -> Standing | None:
        """This standing at ``now``, or None when it cannot be carried there (other records or prices, another
        month, an earlier time, or a machine whose cost began or ended after ``at``)."""
        if records is not self.records or live != self.live or not self.steady or now < self.at \
                or month(now)[0] != self.start:
            return None
        return Standing(records, live, self.start, now, self.spent + self.burn * (now - self.at).total_seconds() / HOUR,
                        self.burn, self.unpriced, True, self.unaccounted, self.moves)

    def moved(self, space: SpaceConfig, records: tuple[MachineRecord, ...], now: datetime,
              live: Mapping[str, float] | None) -> Standing | None:
        """This standing at ``now`` for ``records``, a tuple that shares most of its objects with the one it was
        counted from (as a cycle's sync gives out the records it did not change): carried forward, less what the
        objects no longer there cost at ``now``, plus what the new ones do. None where it cannot be moved: as
        ``carried`` (other prices, another month, an earlier time, not steady), when most records are new, and
        after MOVES moves."""
        old = self.records
        if not isinstance(old, tuple) or live != self.live or not self.steady or now < self.at \
                or self.moves >= MOVES or month(now)[0] != self.start:
            return None
        kept = set(map(id, old)).intersection(map(id, records))  # both tuples are alive: their ids are unique
        if 2 * len(kept) < len(records):
            return None
        spent = self.spent + self.burn * (now - self.at).total_seconds() / HOUR
        burn, unpriced, steady = self.burn, self.unpriced, True
        for sign, changed in ((-1, old), (1, records)):
            for record in changed:
                if id(record) in kept or (self.unaccounted and record.accounted_at is not None):
                    continue
                per_hour = record_price(space, record, live)
                until = gone_at(record)
                if per_hour is None:
                    unpriced += sign * (until is None)
                    continue
                spent += sign * cost(record, per_hour, self.start, now)
                if until is None:
                    burn += sign * per_hour
                if sign > 0:
                    steady = steady and record.created_at <= now and (until is None or until <= now)
        if burn < 1e-9:  # every machine that burned has left: no sum's rounding left over (no "-0.0" shown)
            burn = 0.0
        return Standing(records, live, self.start, now, max(spent, 0.0), burn, unpriced, steady, self.unaccounted,
                        self.moves + 1)


def paced(budget: float, spent: float, now: datetime) -> float:
    """The most a month's ``budget`` may burn an hour now, ``spent`` of it gone: what is left over what is left
    of the month."""
    _, end = month(now)
    hours = max((end - now).total_seconds() / HOUR, 1 / 60)
    return max(0.0, budget - spent) / hours


@dataclass(frozen=True, slots=True)
class Cap:
    """One most the burn may be, and the words that say where it comes from."""

    rule: str
    key: str  # the configuration key that sets it
    rate: float
    words: str


class Caps:
    """The caps of one space while it is planned: the burn, raised by each create made."""

    __slots__ = ("burn", "caps")

    def __init__(self, burn: float, caps: list[Cap]) -> None:
        self.burn = burn
        self.caps = caps

    @classmethod
    def of(cls, space: SpaceConfig, settings: Settings, spend: Spend | None, records: Iterable[MachineRecord],
           now: datetime, live: Mapping[str, float] | None = None) -> Caps | None:
        """The space's caps now, or None when none is set."""
        if not priced(space, settings):
            return None
        _, burn, _ = month_costs(space, records, now, live)
        caps = []
        if space.max_cost_per_hour is not None:
            caps.append(Cap("cost_cap", "max_cost_per_hour", space.max_cost_per_hour,
                            f"max_cost_per_hour {space.max_cost_per_hour:g} of space {space.name}"))
        if space.budget_per_month is not None:
            spent = spend.space_to_date if spend is not None else 0.0
            rate = paced(space.budget_per_month, spent, now)
            caps.append(Cap("budget_pace", "budget_per_month", rate, (
                f"budget_per_month {space.budget_per_month:g} of space {space.name} paced: {spent:.2f} spent, "
                f"{max(0.0, space.budget_per_month - spent):.2f} left for {_left(now)} is {rate:.3f} an hour")))
        if settings.budget_per_month is not None:
            site = spend or Spend(0.0, 0.0)
            rate = paced(settings.budget_per_month, site.site_to_date, now)
            share = max(0.0, rate - site.site_burn_elsewhere - burn) / max(1, site.site_spaces)
            caps.append(Cap("site_budget_pace", "[settings] budget_per_month", burn + share, (
                f"[settings] budget_per_month {settings.budget_per_month:g} paced: {site.site_to_date:.2f} spent "
                f"site-wide, {rate:.3f} an hour for {_left(now)}, {site.site_burn_elsewhere:.3f} burnt elsewhere, "
                f"this space's part of the rest {share:.3f}")))
        return cls(burn, caps)

    def refusal(self, per_hour: float | None, offering: Offering) -> tuple[str, str] | None:
        """(rule, reason) why a machine at ``per_hour`` may not be made now, or None."""
        if per_hour is None:
            keys = " and ".join(sorted({cap.key for cap in self.caps}))
            return "no_price", (f"no price known for {offering} (offering_prices, price_per_hour), and {keys} "
                                "caps what machines cost")
        for cap in self.caps:
            if self.burn + per_hour > cap.rate + 1e-9:
                return cap.rule, (f"spend: burning {self.burn:.3f} an hour, {per_hour:g} more for this machine "
                                  f"would pass {cap.rate:.3f} ({cap.words})")
        return None

    def allows(self, per_hour: float | None) -> bool:
        return per_hour is not None and all(self.burn + per_hour <= cap.rate + 1e-9 for cap in self.caps)

    def add(self, per_hour: float) -> None:
        self.burn += per_hour


def _left(now: datetime) -> str:
    _, end = month(now)
    return f"the {(end - now) / timedelta(days=1):.1f} days left of {now.astimezone(UTC):%Y-%m}"

"""The month's money for one space's cycle, read from the store (core/spend.py says what it means).

The space's own figure is the ledger's (machines accounted this month) and
its records' (machines not accounted yet); a site-wide budget also needs
every other space's, read only when ``[settings] budget_per_month`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache, partial

from sqlalchemy import Connection

from vcycle.core import spend
from vcycle.core.model import MachineRecord, Spend
from vcycle.core.sections import Config, SpaceConfig
from vcycle.store import Store
from vcycle.store.accounts import Ledger, spent_in


def wanted(config: Config, space: SpaceConfig) -> bool:
    """Whether the space's cycle counts money: a cap is set or a price named."""
    return spend.priced(space, config.settings) or spend.known(space)


def month_spent(now: datetime) -> Callable[[Connection], dict[str, float]]:
    """The read of the month's accounted cost per space, for the cycle's own read of the store (Store.look): the
    very same read for every ``now`` of one month, so that a round's read ahead (Store.glance) stands for it."""
    start, _ = spend.month(now)
    return _spent_in(f"{start:%Y-%m}")


@lru_cache(maxsize=4)
def _spent_in(month: str) -> Callable[[Connection], dict[str, float]]:
    return partial(spent_in, month=month)


def observe(config: Config, space: SpaceConfig, store: Store, records: Sequence[MachineRecord],
            now: datetime, live: Mapping[str, float] | None = None, last: spend.Standing | None = None,
            spent: Mapping[str, float] | None = None
            ) -> tuple[Spend | None, spend.Figures | None, spend.Standing | None]:
    """What the planner's caps need (None when no cap is set), the figures status shows (None when the space
    names no price) and the standing of its records not accounted yet, which the next cycle's ``last`` carries
    forward while the records stay the very same, and moves by the records that changed (Standing.moved).
    ``spent``: the month's accounted cost per space, as read with
    the records (month_spent), else read here. Raises StoreError."""
    if not wanted(config, space):
        return None, None, None
    settings = config.settings
    capped = spend.priced(space, settings)
    ledger = Ledger(store)
    if spent is None:
        start, _ = spend.month(now)
        spent = ledger.spent(f"{start:%Y-%m}")
    standing = None
    if last is not None:
        standing = last.carried(records, now, live)
        if standing is None and isinstance(records, tuple):
            standing = last.moved(space, records, now, live)
    standing = standing or spend.Standing.of(space, records, now, live, unaccounted=True)
    figures = spend.figures(space, spent.get(space.name, 0.0), standing, now, live)
    if not capped:
        return None, figures, standing
    if settings.budget_per_month is None:
        return Spend(figures.to_date, figures.to_date), figures, standing
    site, elsewhere = figures.to_date, 0.0
    others = ledger.unaccounted_elsewhere(space.name)
    for name, other in config.spaces.items():
        if name == space.name:
            continue
        theirs = spend.figures(other, spent.get(name, 0.0), others.get(name, ()), now)
        site += theirs.to_date
        elsewhere += theirs.burn
    site += sum(amount for name, amount in spent.items() if name not in config.spaces)  # spaces since removed
    return Spend(figures.to_date, site, elsewhere, len(config.spaces)), figures, standing

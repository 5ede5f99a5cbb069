"""The month's money for one space's cycle, read from the store (core/spend.py says what it means).

The space's own figure is the ledger's (machines accounted this month) and
its records' (machines not accounted yet); a site-wide budget also needs
every other space's, read only when ``[settings] budget_per_month`` is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from vcycle.core import spend
from vcycle.core.model import MachineRecord, Spend
from vcycle.core.sections import Config, SpaceConfig
from vcycle.store import Store
from vcycle.store.accounts import Ledger


def observe(config: Config, space: SpaceConfig, store: Store, records: Iterable[MachineRecord],
            now: datetime, live: Mapping[str, float] | None = None) -> tuple[Spend | None, spend.Figures | None]:
    """What the planner's caps need (None when no cap is set) and the figures status shows (None when the space
    names no price). Raises StoreError."""
    settings = config.settings
    capped = spend.priced(space, settings)
    if not capped and not spend.known(space):
        return None, None
    ledger = Ledger(store)
    start, _ = spend.month(now)
    spent = ledger.spent(f"{start:%Y-%m}")
    figures = spend.figures(space, spent.get(space.name, 0.0), [r for r in records if r.accounted_at is None], now,
                            live)
    if not capped:
        return None, figures
    if settings.budget_per_month is None:
        return Spend(figures.to_date, figures.to_date), figures
    site, elsewhere = figures.to_date, 0.0
    others = ledger.unaccounted_elsewhere(space.name)
    for name, other in config.spaces.items():
        if name == space.name:
            continue
        theirs = spend.figures(other, spent.get(name, 0.0), others.get(name, ()), now)
        site += theirs.to_date
        elsewhere += theirs.burn
    site += sum(amount for name, amount in spent.items() if name not in config.spaces)  # spaces since removed
    return Spend(figures.to_date, site, elsewhere, len(config.spaces)), figures

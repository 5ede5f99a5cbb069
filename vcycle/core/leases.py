"""Which manager holds which space, when several share one store: the spread and each round's steps (pure).

Every manager computes the same spread from the same list of live managers:
spaces are dealt evenly (no manager holds more than one space above another),
each to the manager that ranks it highest (rendezvous hashing) among those
with room, so that a manager that joins or leaves moves about 1/n of the
spaces and the rest stay where they are. A manager claims the free spaces the
spread gives it, renews the ones it holds, and hands on (releases, between two
of its cycles) the ones the spread gives a live other. It never takes a space
another holds under a lease not yet expired. Times are the store's clock, in
seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

RELEASED = "released:"  # the reason of a lease its holder gave up, before why


@dataclass(frozen=True, slots=True)
class Lease:
    """One space's lease as the store has it."""

    space: str
    holder: str
    epoch: int
    since: float
    expires: float
    reason: str = ""

    def live(self, now: float) -> bool:
        return self.expires > now


@dataclass(frozen=True)
class Steps:
    """What one manager does in one round, each claim and release with its reason."""

    claim: Mapping[str, str] = field(default_factory=dict)  # space -> why
    renew: tuple[str, ...] = ()
    release: Mapping[str, str] = field(default_factory=dict)  # space -> why


def _rank(manager: str, space: str) -> bytes:
    return hashlib.blake2b(f"{manager}\0{space}".encode(), digest_size=8).digest()


def spread(spaces: Collection[str], managers: Collection[str]) -> dict[str, str]:
    """Each space's manager: an even deal, each space with the manager ranking it highest that still has room."""
    if not managers:
        return {}
    names = sorted(set(managers))
    base, extra = divmod(len(spaces), len(names))
    # who gets one more than the others: the managers ranking the deal itself highest, fixed for a set of spaces
    key = "\0".join(sorted(spaces))
    room = {m: base for m in names}
    for m in sorted(names, key=lambda m: _rank(m, key), reverse=True)[:extra]:
        room[m] += 1
    pairs = sorted(((_rank(m, s), s, m) for s in spaces for m in names), reverse=True)
    dealt: dict[str, str] = {}
    for _, space, manager in pairs:
        if space not in dealt and room[manager] > 0:
            dealt[space] = manager
            room[manager] -= 1
    return dealt


def steps(me: str, spaces: Sequence[str], leases: Mapping[str, Lease], live: Collection[str], now: float, *,
          renew_due: bool, busy: Collection[str] = (), leaving: bool = False) -> Steps:
    """This round's claims, renewals and releases for manager ``me``.

    ``live``: the managers alive (``me`` among them unless ``leaving``); ``busy``: the spaces ``me`` is cycling
    now, released only once their cycle is over; ``leaving``: ``me`` is stopping and hands every space on."""
    dealt = spread(spaces, set(live) - {me} if leaving else set(live) | {me})
    claim: dict[str, str] = {}
    renew: list[str] = []
    release: dict[str, str] = {}
    for space in spaces:
        lease = leases.get(space)
        mine = lease is not None and lease.holder == me and lease.live(now)
        meant = dealt.get(space)
        if mine:
            if meant != me and space not in busy:
                release[space] = ("stopping: handed on" if leaving else
                                  f"handed to {meant}: {len(set(live) | {me})} managers share the spaces")
            elif renew_due or meant != me:
                renew.append(space)
        elif meant == me and (lease is None or not lease.live(now)):
            if lease is None:
                claim[space] = "never held before"
            elif lease.holder == me:
                claim[space] = f"own lease of epoch {lease.epoch} had lapsed"
            elif lease.reason.startswith(RELEASED):
                claim[space] = f"released by {lease.holder} ({lease.reason[len(RELEASED):].strip()})"
            else:
                claim[space] = f"taken over: the lease of {lease.holder} (epoch {lease.epoch}) expired " \
                               f"{now - lease.expires:.1f}s ago"
    return Steps(claim, tuple(renew), release)

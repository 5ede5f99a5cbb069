"""The spread of spaces over managers and each round's steps (vcycle/core/leases.py): pure, no store."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vcycle.core.leases import RELEASED, Lease, spread, steps

SPACES = [f"space{i:02d}" for i in range(20)]


@settings(max_examples=200, deadline=None)
@given(st.sets(st.text("abcdefgh", min_size=1, max_size=6), max_size=40),
       st.sets(st.text("mnopq", min_size=1, max_size=4), min_size=1, max_size=8))
def test_the_spread_is_even_and_total(spaces: set[str], managers: set[str]) -> None:
    dealt = spread(spaces, managers)
    assert set(dealt) == spaces
    counts = [list(dealt.values()).count(m) for m in managers]
    assert max(counts) - min(counts) <= 1
    assert spread(sorted(spaces, reverse=True), sorted(managers, reverse=True)) == dealt  # order does not matter


def test_a_manager_joining_or_leaving_moves_few_spaces() -> None:
    three = spread(SPACES, ["a", "b", "c"])
    four = spread(SPACES, ["a", "b", "c", "d"])
    moved = sum(1 for s in SPACES if three[s] != four[s])
    assert list(four.values()).count("d") == 5
    assert moved <= 5 + 3  # the newcomer's share, and a few to even the rest out
    two = spread(SPACES, ["a", "b"])
    kept = sum(1 for s in SPACES if three[s] in ("a", "b") and two[s] == three[s])
    assert kept >= sum(1 for s in SPACES if three[s] in ("a", "b")) - 3  # c's spaces move, the others mostly stay


def lease(space: str, holder: str, expires: float, epoch: int = 1, reason: str = "") -> Lease:
    return Lease(space, holder, epoch, expires - 15, expires, reason)


def test_free_spaces_of_my_share_are_claimed_and_others_are_left() -> None:
    dealt = spread(SPACES, ["a", "b"])
    mine = [s for s in SPACES if dealt[s] == "a"]
    done = steps("a", SPACES, {}, ["a", "b"], 100.0, renew_due=False)
    assert set(done.claim) == set(mine)
    assert all(why == "never held before" for why in done.claim.values())
    assert not done.release and not done.renew


def test_a_live_lease_of_another_is_never_claimed_an_expired_one_is_taken_over() -> None:
    dealt = spread(SPACES, ["a", "b"])
    mine = [s for s in SPACES if dealt[s] == "a"]
    held = {s: lease(s, "old", 101.0) for s in mine[:3]} | {s: lease(s, "old", 99.0, epoch=4) for s in mine[3:5]}
    done = steps("a", SPACES, held, ["a", "b"], 100.0, renew_due=False)
    assert not set(mine[:3]) & set(done.claim)
    assert done.claim[mine[3]] == "taken over: the lease of old (epoch 4) expired 1.0s ago"


def test_a_released_lease_is_claimed_with_its_reason() -> None:
    dealt = spread(SPACES, ["a"])
    space = SPACES[0]
    assert dealt[space] == "a"
    held = {space: lease(space, "b", 100.0, reason=f"{RELEASED} stopping: handed on")}
    done = steps("a", SPACES, held, ["a"], 100.0, renew_due=False)
    assert done.claim[space] == "released by b (stopping: handed on)"


def test_spaces_of_another_managers_share_are_handed_on_between_cycles() -> None:
    dealt = spread(SPACES, ["a", "b"])
    theirs = [s for s in SPACES if dealt[s] == "b"]
    held = {s: lease(s, "a", 110.0) for s in SPACES}
    done = steps("a", SPACES, held, ["a", "b"], 100.0, renew_due=False, busy={theirs[0]})
    assert set(done.release) == set(theirs) - {theirs[0]}
    assert done.release[theirs[1]] == "handed to b: 2 managers share the spaces"
    assert theirs[0] in done.renew  # being cycled: kept (and renewed) until its cycle ends
    assert not done.claim


def test_renewals_come_when_due_and_a_leaving_manager_hands_everything_on() -> None:
    held = {s: lease(s, "a", 110.0) for s in SPACES}
    assert set(steps("a", SPACES, held, ["a"], 100.0, renew_due=True).renew) == set(SPACES)
    assert not steps("a", SPACES, held, ["a"], 100.0, renew_due=False).renew
    leaving = steps("a", SPACES, held, ["a", "b"], 100.0, renew_due=False, leaving=True, busy={SPACES[0]})
    assert set(leaving.release) == set(SPACES) - {SPACES[0]}
    assert leaving.release[SPACES[1]] == "stopping: handed on"
    alone = steps("a", SPACES, held, ["a"], 100.0, renew_due=False, leaving=True)
    assert set(alone.release) == set(SPACES) and not alone.claim  # the last manager too lets go


def test_my_own_lapsed_lease_is_claimed_again_under_a_new_epoch() -> None:
    space = SPACES[0]
    done = steps("a", [space], {space: lease(space, "a", 99.0, epoch=7)}, ["a"], 100.0, renew_due=True)
    assert done.claim == {space: "own lease of epoch 7 had lapsed"}
    assert not done.renew

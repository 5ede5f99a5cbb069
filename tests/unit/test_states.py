"""The machine state table: every row asserted, no state without one, illegal moves raise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from vctest import T0

from vcycle.core import states
from vcycle.core.model import new_record, transition
from vcycle.core.states import TERMINAL_STATES, TRANSITIONS, MachineState, can_transition
from vcycle.errors import InvalidTransition

S = MachineState

EXPECTED_EDGES = {
    (S.REQUESTED, S.STARTING), (S.REQUESTED, S.RUNNING), (S.REQUESTED, S.STOPPED), (S.REQUESTED, S.FAILED),
    (S.REQUESTED, S.CREATE_FAILED), (S.REQUESTED, S.DELETING),
    (S.STARTING, S.RUNNING), (S.STARTING, S.STOPPED), (S.STARTING, S.FAILED), (S.STARTING, S.DELETING),
    (S.STARTING, S.DELETE_FAILED), (S.STARTING, S.GONE),
    (S.RUNNING, S.DRAINING), (S.RUNNING, S.STOPPED), (S.RUNNING, S.FAILED), (S.RUNNING, S.DELETING),
    (S.RUNNING, S.DELETE_FAILED), (S.RUNNING, S.GONE),
    (S.DRAINING, S.STOPPED), (S.DRAINING, S.FAILED), (S.DRAINING, S.DELETING), (S.DRAINING, S.DELETE_FAILED),
    (S.DRAINING, S.GONE),
    (S.STOPPED, S.DELETING), (S.STOPPED, S.DELETE_FAILED), (S.STOPPED, S.GONE), (S.STOPPED, S.FAILED),
    (S.FAILED, S.DELETING), (S.FAILED, S.DELETE_FAILED), (S.FAILED, S.GONE),
    (S.DELETING, S.GONE), (S.DELETING, S.DELETE_FAILED),
    (S.DELETE_FAILED, S.DELETING), (S.DELETE_FAILED, S.GONE),
    (S.CREATE_FAILED, S.STARTING), (S.CREATE_FAILED, S.RUNNING), (S.CREATE_FAILED, S.STOPPED),
    (S.CREATE_FAILED, S.FAILED), (S.CREATE_FAILED, S.GONE),
}


def test_table_has_exactly_the_documented_edges() -> None:
    assert set(TRANSITIONS) == EXPECTED_EDGES


@pytest.mark.parametrize(("source", "target"), sorted(EXPECTED_EDGES, key=lambda e: (e[0].value, e[1].value)))
def test_every_edge_is_allowed_and_its_cause_is_kept_in_the_history(source: MachineState, target: MachineState) -> None:
    assert can_transition(source, target)
    moved = transition(_record(source), target, T0, "why, with numbers")
    assert moved.last is not None and moved.last.cause == TRANSITIONS[(source, target)]
    assert (moved.last.state, moved.last.reason) == (target, "why, with numbers")


def test_no_two_edges_from_one_state_share_a_cause() -> None:
    """Each edge says which observation or decision causes it: two edges from one state cannot say the same."""
    for state in S:
        causes = [cause for (source, _), cause in TRANSITIONS.items() if source is state]
        assert len(causes) == len(set(causes)), state


def test_no_state_lacks_a_row() -> None:
    sources = {a for a, _ in TRANSITIONS}
    targets = {b for _, b in TRANSITIONS}
    for state in S:
        assert state in targets or state is S.REQUESTED, f"{state} cannot be reached"
        assert state in sources or state in TERMINAL_STATES, f"{state} has no way out"


def test_gone_is_terminal() -> None:
    assert not any(source is S.GONE for source, _ in TRANSITIONS)


def _record(state: MachineState = S.REQUESTED):  # type: ignore[no-untyped-def]
    return new_record(name="m1", space="sp", machinetype="mt", state=state, processors=1, now=T0,
                      request_id="r1", reason="intent recorded")


def test_a_record_holds_its_last_change_with_time_reason_and_cause() -> None:
    record = _record()
    assert (record.last.state, record.last.at, record.last.reason, record.last.cause) == (  # type: ignore[union-attr]
        S.REQUESTED, T0, "intent recorded", states.BIRTH[S.REQUESTED])
    later = T0 + timedelta(seconds=30)
    moved = transition(record, S.STARTING, later, "cloud lists it as BUILD")
    assert moved.state is S.STARTING
    assert (moved.last.state, moved.last.at, moved.last.reason) == (  # type: ignore[union-attr]
        S.STARTING, later, "cloud lists it as BUILD")
    assert record.state is S.REQUESTED and record.last.state is S.REQUESTED  # type: ignore[union-attr]
    assert moved.state_since == later and moved.reason == "cloud lists it as BUILD"


# --- the groups of states, each held against the table ---------------------------------------------------

def _reach(state: MachineState) -> set[MachineState]:
    seen, todo = set(), [state]
    while todo:
        for (a, b) in TRANSITIONS:
            if a is todo[-1] and b not in seen:
                seen.add(b)
                todo.insert(0, b)
        todo.pop()
    return seen


def test_terminal_states_have_no_way_out_and_every_other_state_reaches_one() -> None:
    assert {a for a, _ in TRANSITIONS}.isdisjoint(TERMINAL_STATES)
    for state in set(S) - TERMINAL_STATES:
        assert _reach(state) & TERMINAL_STATES, state


def test_alive_states_are_those_an_operator_may_delete_and_that_the_planner_does_not_delete_itself() -> None:
    deletable = {a for a, b in TRANSITIONS if b is S.DELETING}
    assert states.ALIVE_STATES == deletable - states.TO_DELETE_STATES - {S.DELETE_FAILED}


def test_starting_states_are_the_alive_ones_whose_next_good_news_is_running() -> None:
    assert states.STARTING_STATES == {s for s in states.ALIVE_STATES if (s, S.RUNNING) in TRANSITIONS}
    assert states.STARTING_STATES == {S.REQUESTED, S.STARTING}
    assert states.WORKING_STATES == states.ALIVE_STATES - states.STARTING_STATES == {S.RUNNING, S.DRAINING}


def test_listed_alive_states_are_the_alive_ones_the_cloud_has_shown() -> None:
    born_listed = {s for s, cause in states.BIRTH.items() if "listed" in cause}
    assert states.LISTED_ALIVE_STATES == states.ALIVE_STATES - {S.REQUESTED}
    assert states.LISTED_ALIVE_STATES - {S.DRAINING} <= born_listed  # a machine adopted from a listing is born there


def test_states_holding_processors_are_all_but_the_ends_without_a_machine() -> None:
    """A machine may exist in the cloud in every state but GONE and a request given up (CREATE_FAILED, which
    only a listing can bring back)."""
    assert states.HOLDS_PROCESSORS == set(S) - {S.GONE, S.CREATE_FAILED}
    revived = {b for a, b in TRANSITIONS if a is S.CREATE_FAILED}
    assert revived - {S.GONE} <= states.HOLDS_PROCESSORS


def test_to_delete_states_are_ended_alive_machines() -> None:
    ended = {b for a, b in TRANSITIONS if a is S.RUNNING} - {S.DRAINING, S.DELETING, S.DELETE_FAILED, S.GONE}
    assert states.TO_DELETE_STATES == ended


def test_every_birth_cause_is_for_a_state_a_record_can_start_in() -> None:
    assert set(states.BIRTH) == {S.REQUESTED} | {b for a, b in TRANSITIONS if a is S.CREATE_FAILED} - {S.GONE}


@pytest.mark.parametrize(("source", "target"), [
    (S.GONE, S.RUNNING), (S.RUNNING, S.REQUESTED), (S.STOPPED, S.RUNNING), (S.DELETING, S.RUNNING),
    (S.REQUESTED, S.GONE),
])
def test_illegal_moves_raise(source: MachineState, target: MachineState) -> None:
    with pytest.raises(InvalidTransition, match=f"{source.name} -> {target.name}"):
        transition(_record(source), target, T0, "nope")

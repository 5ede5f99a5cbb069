"""The machine state table: every row asserted, no state without one, illegal moves raise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from vctest import T0

from vcycle.errors import InvalidTransition
from vcycle.model import new_record, transition
from vcycle.states import TERMINAL_STATES, TRANSITIONS, MachineState, can_transition

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
def test_every_edge_is_allowed_and_has_a_cause(source: MachineState, target: MachineState) -> None:
    assert can_transition(source, target)
    assert len(TRANSITIONS[(source, target)]) > 10


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


def test_transition_keeps_history_with_time_and_reason() -> None:
    record = _record()
    later = T0 + timedelta(seconds=30)
    moved = transition(record, S.STARTING, later, "cloud lists it as BUILD")
    assert moved.state is S.STARTING
    assert [(h.state, h.at, h.reason) for h in moved.history] == [
        (S.REQUESTED, T0, "intent recorded"), (S.STARTING, later, "cloud lists it as BUILD")]
    assert record.state is S.REQUESTED  # the original is untouched
    assert moved.state_since == later


@pytest.mark.parametrize(("source", "target"), [
    (S.GONE, S.RUNNING), (S.RUNNING, S.REQUESTED), (S.STOPPED, S.RUNNING), (S.DELETING, S.RUNNING),
    (S.REQUESTED, S.GONE),
])
def test_illegal_moves_raise(source: MachineState, target: MachineState) -> None:
    with pytest.raises(InvalidTransition, match=f"{source.name} -> {target.name}"):
        transition(_record(source), target, T0, "nope")

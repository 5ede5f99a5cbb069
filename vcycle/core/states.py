"""Machine states and the table of allowed changes between them.

The table is the single truth about how a machine may move; every edge says
which observation or decision causes it. ``transition()`` is the only way a
record changes state, and it keeps the change in the record's history.

Pure: no clock, no I/O; ``now`` is always given.
"""

from __future__ import annotations

import enum

from vcycle.errors import InvalidTransition


class MachineState(enum.Enum):
    """Where vcycle believes a machine is in its life."""

    REQUESTED = "requested"  # intent committed, create call not yet confirmed
    STARTING = "starting"  # the cloud lists it, not yet running
    RUNNING = "running"  # the cloud says it runs
    DRAINING = "draining"  # asked to finish its work and stop taking more
    STOPPED = "stopped"  # it shut itself down (or was powered off)
    FAILED = "failed"  # the cloud reports an error state
    DELETING = "deleting"  # a delete call was accepted; waiting for it to vanish
    DELETE_FAILED = "delete_failed"  # the delete call failed; retried later
    GONE = "gone"  # no longer in the cloud; kept for history until cleanup
    CREATE_FAILED = "create_failed"  # the create call failed or never showed up

    # Members are singletons: identity hashing is correct and keeps set and
    # dict look-ups in the planner's per-machine loop in C.
    __hash__ = object.__hash__


S = MachineState

# (from, to) -> the observation or decision that causes the edge.
TRANSITIONS: dict[tuple[MachineState, MachineState], str] = {
    # REQUESTED: the executor committed intent and called (or is calling) create.
    (S.REQUESTED, S.STARTING): "the cloud lists the requested machine as booting",
    (S.REQUESTED, S.RUNNING): "the cloud lists the requested machine as already running",
    (S.REQUESTED, S.STOPPED): "the requested machine is listed but already shut down",
    (S.REQUESTED, S.FAILED): "the requested machine is listed in an error state",
    (S.REQUESTED, S.CREATE_FAILED): "the create call failed, or the machine never appeared in time",
    (S.REQUESTED, S.DELETING): "an operator deleted the machine before the cloud listed it",
    # STARTING
    (S.STARTING, S.RUNNING): "the cloud reports the machine running",
    (S.STARTING, S.STOPPED): "the machine shut down before it was seen running",
    (S.STARTING, S.FAILED): "the cloud reports an error while booting",
    (S.STARTING, S.DELETING): "delete accepted (starting timeout, shutdown time or operator)",
    (S.STARTING, S.DELETE_FAILED): "delete call failed while booting",
    (S.STARTING, S.GONE): "the machine vanished from the cloud listing while booting",
    # RUNNING
    (S.RUNNING, S.DRAINING): "asked to drain: no new work, finish what runs",
    (S.RUNNING, S.STOPPED): "the cloud reports the machine shut down",
    (S.RUNNING, S.FAILED): "the cloud reports an error state",
    (S.RUNNING, S.DELETING): "delete accepted (wallclock, heartbeat, shutdown time or operator)",
    (S.RUNNING, S.DELETE_FAILED): "delete call failed",
    (S.RUNNING, S.GONE): "the machine vanished from the cloud listing",
    # DRAINING
    (S.DRAINING, S.STOPPED): "the drained machine shut down",
    (S.DRAINING, S.FAILED): "the cloud reports an error while draining",
    (S.DRAINING, S.DELETING): "delete accepted (drain finished or timed out)",
    (S.DRAINING, S.DELETE_FAILED): "delete call failed while draining",
    (S.DRAINING, S.GONE): "the draining machine vanished from the cloud listing",
    # STOPPED and FAILED are deleted by the planner.
    (S.STOPPED, S.DELETING): "delete accepted for a machine that shut down",
    (S.STOPPED, S.DELETE_FAILED): "delete call failed for a machine that shut down",
    (S.STOPPED, S.GONE): "the stopped machine vanished from the cloud listing",
    (S.STOPPED, S.FAILED): "the stopped machine went into an error state",
    (S.FAILED, S.DELETING): "delete accepted for a failed machine",
    (S.FAILED, S.DELETE_FAILED): "delete call failed for a failed machine",
    (S.FAILED, S.GONE): "the failed machine vanished from the cloud listing",
    # DELETING
    (S.DELETING, S.GONE): "the deleted machine is no longer listed",
    (S.DELETING, S.DELETE_FAILED): "the delete did not complete in time; retry later",
    # DELETE_FAILED
    (S.DELETE_FAILED, S.DELETING): "a retried delete was accepted",
    (S.DELETE_FAILED, S.GONE): "the machine is no longer listed",
    # CREATE_FAILED
    (S.CREATE_FAILED, S.STARTING): "a tagged machine appeared after its request was given up: adopted",
    (S.CREATE_FAILED, S.RUNNING): "a tagged machine appeared running after its request was given up: adopted",
    (S.CREATE_FAILED, S.STOPPED): "a tagged machine appeared stopped after its request was given up: adopted",
    (S.CREATE_FAILED, S.FAILED): "a tagged machine appeared failed after its request was given up: adopted",
    (S.CREATE_FAILED, S.GONE): "the failed request is closed: nothing exists in the cloud",
}

# How a record is born in each state it can be born in (the cause of its first history entry).
BIRTH: dict[MachineState, str] = {
    S.REQUESTED: "intent committed before the create call",
    **{state: "adopted: a tagged machine the store did not know is listed by the cloud"
       for state in (S.STARTING, S.RUNNING, S.STOPPED, S.FAILED)},
}

# The groups of states the rest of vcycle asks about, each defined here once; tests/unit/test_states.py holds
# every one against the table.

# Nothing more happens to the machine but cleanup: no edge leaves these.
TERMINAL_STATES: frozenset[MachineState] = frozenset({S.GONE})
# The machine may exist in the cloud, so it uses processors: every state but the terminal one and a request
# given up.
HOLDS_PROCESSORS: frozenset[MachineState] = frozenset(MachineState) - TERMINAL_STATES - {S.CREATE_FAILED}
# Alive: doing (or about to do) work; an operator may delete it (or give up its request).
ALIVE_STATES: frozenset[MachineState] = frozenset({S.REQUESTED, S.STARTING, S.RUNNING, S.DRAINING})
# Alive and still booting: the next good news is RUNNING. They count against max_starting_processors.
STARTING_STATES: frozenset[MachineState] = frozenset(s for s in ALIVE_STATES if (s, S.RUNNING) in TRANSITIONS)
# Alive and past booting: running, or draining its work.
WORKING_STATES: frozenset[MachineState] = ALIVE_STATES - STARTING_STATES
# Alive and listed by the cloud (a request is not yet): deleted for deadlines, timeouts and operators.
LISTED_ALIVE_STATES: frozenset[MachineState] = ALIVE_STATES - {S.REQUESTED}
# Ended by itself or by the cloud while alive: the planner asks for a delete.
TO_DELETE_STATES: frozenset[MachineState] = frozenset({S.STOPPED, S.FAILED})


def can_transition(current: MachineState, target: MachineState) -> bool:
    """Whether the table allows ``current -> target``."""
    return (current, target) in TRANSITIONS


def cause(current: MachineState, target: MachineState) -> str:
    """The documented cause of an edge; raises InvalidTransition if there is none."""
    try:
        return TRANSITIONS[(current, target)]
    except KeyError:
        raise InvalidTransition(f"no edge {current.name} -> {target.name} in the machine state table") from None

"""The status page's time series point (vcycle/core/series.py): pure counting."""

from __future__ import annotations

from vctest import rec

from vcycle.core.model import Demand
from vcycle.core.series import point
from vcycle.core.states import MachineState

S = MachineState


def test_a_point_counts_states_demand_and_what_the_cycle_did() -> None:
    records = [rec("a", S.RUNNING), rec("b", S.RUNNING), rec("c", S.STARTING), rec("d", S.GONE),
               rec("e", S.RUNNING, mt="other")]
    found = point(["mt", "other", "empty"], records, {"mt": Demand(idle_jobs=7, running_jobs=2),
                                                       "other": Demand.unknown("down")},
                  {"mt": 1}, {"other": 2}, {"mt": 1})
    assert found == {"empty": {}, "mt": {"running": 2, "starting": 1, "idle": 7, "running_jobs": 2, "creates": 1,
                                          "aborts": 1},
                     "other": {"running": 1, "deletes": 2}}


def test_a_machinetype_no_longer_configured_still_counts_its_machines() -> None:
    assert point([], [rec("a", S.DELETING, mt="old")], {}, {}, {}, {}) == {"old": {"deleting": 1}}

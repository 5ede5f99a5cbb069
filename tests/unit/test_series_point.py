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


def test_a_point_is_kept_in_a_few_bytes_and_reads_back_as_it_was() -> None:
    from vcycle.core.series import KEYS
    from vcycle.store.points import STORED, decode, encode

    assert set(KEYS) <= set(STORED)  # a new state needs its place appended to STORED
    p = {"mt": {"running": 41, "starting": 2, "idle": 7}, "quiet": {}}
    kept = encode(p)
    assert kept == '{"mt":[0,2,41,0,0,0,0,0,0,7],"quiet":[]}'
    assert decode(kept) == p
    assert decode('{"mt":{"running":3}}') == {"mt": {"running": 3}}  # as the first points were kept
    try:
        encode({"mt": {"sleeping": 1}})
    except ValueError as exc:
        assert "append it to STORED" in str(exc)
    else:
        raise AssertionError("a count with no place kept was dropped silently")


def test_merged_points_average_their_counts_sum_their_events_and_weigh_what_they_stand_for() -> None:
    from vcycle.core.series import WEIGHT, merge, weight
    from vcycle.store.points import decode, encode

    first = merge([{"mt": {"running": 10, "creates": 2}}, {"mt": {"running": 20, "aborts": 1}}])
    assert first == {"mt": {"running": 15.0, "creates": 2, "aborts": 1}, WEIGHT: {"points": 2}}
    again = merge([first, {"mt": {"running": 30, "creates": 1}}])  # three points in all: (10 + 20 + 30) / 3
    assert again["mt"] == {"running": 20.0, "creates": 3, "aborts": 1} and weight(again) == 3
    assert decode(encode(again)) == again

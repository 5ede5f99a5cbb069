"""The simulated batch system's matching, checked by hand: first fit in queue order, running jobs counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vcycle.sim.batch import Batch
from vcycle.sim.trace import Job

START = datetime(2026, 1, 5, tzinfo=UTC)


def test_jobs_start_oldest_first_on_the_first_machine_with_room_and_big_ones_wait() -> None:
    jobs = [Job("big", 0, 4, 1000, 600, "mt"), Job("a", 1, 1, 1000, 600, "mt"), Job("b", 2, 2, 1000, 300, "mt"),
            Job("c", 3, 1, 1000, 600, "mt")]
    batch = Batch(jobs, START, "mt", {"mt": ("sp",)})
    machines = {"sp": [("mt", "m1", 2), ("mt", "m2", 2)]}
    batch.step(START + timedelta(seconds=10), machines)
    started = {j: o.started for j, o in batch.outcomes.items()}
    assert started == {"big": None, "a": 10.0, "b": 10.0, "c": 10.0}  # 4 cores fit nowhere; the rest first fit
    assert {job: slot.name for job, (slot, _) in batch.running.items()} == {"a": "m1", "c": "m1", "b": "m2"}
    assert batch.counts("mt") == (1, 3) and batch.demand("mt").running_jobs == 3
    batch.step(START + timedelta(seconds=400), machines)  # b ended: m2 is free again, still too small for big
    assert batch.counts("mt") == (1, 2) and batch.outcomes["b"].ended == 310.0
    batch.step(START + timedelta(seconds=500), {"sp": [("mt", "m3", 4)]})  # m1, m2 taken away under a and c
    assert batch.counts("mt") == (1, 2)  # a and c start again first, on m3; big still finds no 4 cores free
    assert (batch.outcomes["a"].started, batch.outcomes["a"].restarts, batch.outcomes["big"].started) == (
        500.0, 1, None)

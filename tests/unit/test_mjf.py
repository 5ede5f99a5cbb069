"""Machine/Job Features of a new machine, key by key, as the original vcycle wrote them."""

from __future__ import annotations

from datetime import timedelta

from vctest import T0, make_config

from vcycle.core.mjf import features


def test_features_of_a_four_processor_machine() -> None:
    mt = make_config(machinetypes={"mt": {"hs06_per_processor": 12.5, "mb_per_processor": 3000,
                                          "max_wallclock_seconds": 86400}}).spaces["sp"].machinetypes["mt"]
    shutdown = T0 + timedelta(days=1)
    found = features(mt, 4, T0, shutdown, None)
    start, end = str(int(T0.timestamp())), str(int(shutdown.timestamp()))
    assert found == {
        "machinefeatures": {"jobslots": "1", "total_cpu": "4", "phys_cores": "4", "log_cores": "4", "hs06": "50",
                            "shutdowntime": end},
        "jobfeatures": {"wall_limit_secs": "86400", "cpu_limit_secs": "86400", "max_rss_bytes": str(12000 * 2**20),
                        "allocated_cpu": "4", "jobstart_secs": start, "hs06_job": "50"},
    }


def test_space_shutdown_time_sets_shutdowntime_job_and_no_hs06_without_a_rating() -> None:
    mt = make_config().spaces["sp"].machinetypes["mt"]
    cap = T0 + timedelta(hours=2)
    found = features(mt, 1, T0, cap, cap)
    assert found["jobfeatures"]["shutdowntime_job"] == str(int(cap.timestamp()))
    assert "hs06" not in found["machinefeatures"] and "hs06_job" not in found["jobfeatures"]

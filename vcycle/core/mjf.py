"""Machine/Job Features (HSF-TN-2016-02) of one machine, as the original vcycle wrote them.

Values are the text that each MJF key file holds. The job is the whole
machine (one job slot), so machine and job values describe the same
processors. ``jobstart_secs`` is the creation time (the old vcycle
overwrote it with the VM's UUID, a bug not kept).

Pure: no clock, no I/O.
"""

from __future__ import annotations

from datetime import datetime

from vcycle.core.sections import MachinetypeConfig

MB = 1024 * 1024


def features(mt: MachinetypeConfig, processors: int, created_at: datetime, shutdown_at: datetime,
             space_shutdown: datetime | None) -> dict[str, dict[str, str]]:
    """{"machinefeatures": {key: text}, "jobfeatures": {key: text}} for a new machine."""
    shutdown = str(int(shutdown_at.timestamp()))
    machine = {"jobslots": "1", "total_cpu": str(processors), "phys_cores": str(processors),
               "log_cores": str(processors), "shutdowntime": shutdown}
    job = {"wall_limit_secs": str(mt.max_wallclock_seconds), "cpu_limit_secs": str(mt.max_wallclock_seconds),
           "max_rss_bytes": str(mt.mb_per_processor * MB * processors), "allocated_cpu": str(processors),
           "jobstart_secs": str(int(created_at.timestamp()))}
    if mt.hs06_per_processor is not None:
        hs06 = f"{mt.hs06_per_processor * processors:g}"
        machine["hs06"] = hs06
        job["hs06_job"] = hs06
    if space_shutdown is not None and space_shutdown <= shutdown_at:
        job["shutdowntime_job"] = shutdown
    return {"machinefeatures": machine, "jobfeatures": job}

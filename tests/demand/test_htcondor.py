"""HTCondor demand (vcycle/demand/htcondor.py) from idle jobs, shaped, through the bindings' calls and through
``condor_q``/``condor_status -json``.

No HTCondor daemon can run here (the htcondor wheel ships the bindings only; Debian 12 has no HTCondor
package): the pool is tests/fakecondor.py, whose ads are classad2 ClassAds loaded from fixtures in the exact
shape the tools print, with constraints evaluated by classad2. The unreachable-collector case uses the real
htcondor2 bindings against a closed port.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakecondor import FIXTURES, FakeHTCondor, FakePool, write_tools
from vctest import load_text

from vcycle.core.model import JobShape
from vcycle.demand import make_source
from vcycle.demand.htcondor import (
    BindingsPool,
    CommandPool,
    HTCondorDemand,
    job_constraint,
    parse_json_ads,
    shapes,
)
from vcycle.errors import DemandError
from vcycle.testing import free_port

NOW = datetime.fromtimestamp(1_800_000_000, UTC)

CONFIG = """
[settings]
manager_name = t

[demand pool]
type = htcondor
collector = cm.example.org:9618
constraint = JobUniverse =?= undefined || JobUniverse == 5
min_idle_seconds = {min_idle}

[space sp]
api = fake
processors_limit = 100

[machinetype sp atlas]
user_data = ud
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
min_processors = 8
demand = pool
htcondor_constraint = x509UserProxyVOName == "atlas"

[machinetype sp lhcb]
user_data = ud
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
demand = pool
htcondor_constraint = Owner == "lhcbprd"
"""


def source(pool: Any, min_idle: int = 300) -> HTCondorDemand:
    config = load_text(CONFIG.format(min_idle=min_idle))
    made = make_source(config.demands["pool"], config.spaces)
    assert isinstance(made, HTCondorDemand)
    made.pool, made.clock = pool, lambda: NOW
    return made


def test_the_constraint_selects_idle_jobs_waiting_long_enough() -> None:
    assert job_constraint(None, None, NOW, 0) == "JobStatus == 1"
    assert job_constraint("Owner == \"a\"", "RequestCpus > 1", NOW, 300) == (
        'JobStatus == 1 && EnteredCurrentStatus <= 1799999700 && (Owner == "a") && (RequestCpus > 1)')


def test_bindings_count_idle_jobs_by_shape_per_machinetype() -> None:
    pool = FakePool.from_fixtures()
    found = source(BindingsPool("cm.example.org:9618", module=FakeHTCondor(pool))).demand("sp")
    # atlas: 101.0 and 101.1 (1 core), 102.0 (8 cores), 106.0 (64 cores); not 103.0 (held), 104.0 (running),
    # 105.0 (idle only 100 s of the 300 needed)
    assert found["atlas"].idle_jobs == 4
    assert found["atlas"].shapes == (JobShape(1, 2000, 1000000, 2), JobShape(8, 16000, 20000000, 1),
                                     JobShape(64, 256000, 1000000, 1))
    assert found["lhcb"].shapes == (JobShape(1, 2500, 2000000, 2),)
    assert ("locateAll", "Schedd") in pool.calls  # every schedd the collector knows
    assert {c[1] for c in pool.calls if c[0] == "schedd.query"} == {"schedd1.example.org", "schedd2.example.org"}


def test_an_expression_request_is_evaluated_as_htcondor_would() -> None:
    pool = FakePool.from_fixtures()
    found = source(BindingsPool(None, module=FakeHTCondor(pool)), min_idle=0).demand("sp")
    assert JobShape(1, 1500, 500000, 1) in found["atlas"].shapes  # 105.0: (ImageSize + 1023) / 1024, DiskUsage


def test_the_command_line_tools_give_the_same_demand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = write_tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    by_tools = source(CommandPool("cm.example.org:9618", timeout=30)).demand("sp")
    by_bindings = source(BindingsPool(None, module=FakeHTCondor(FakePool.from_fixtures()))).demand("sp")
    assert by_tools == by_bindings
    lines = [json.loads(line) for line in calls.read_text().splitlines()]
    assert lines[0] == ["condor_status", "-pool", "cm.example.org:9618", "-schedd", "-json", "-attributes", "Name"]
    q = next(line for line in lines if line[0] == "condor_q")
    assert q[1:6] == ["-pool", "cm.example.org:9618", "-name", "schedd1.example.org", "-allusers"]
    assert "-json" in q and 'x509UserProxyVOName == "atlas"' in q[q.index("-constraint") + 1]


def test_named_schedds_only_are_asked() -> None:
    pool = FakePool.from_fixtures()
    found = source(BindingsPool(None, ["schedd2.example.org"], module=FakeHTCondor(pool))).demand("sp")
    assert found["atlas"].idle_jobs == 0 and found["lhcb"].idle_jobs == 2
    with pytest.raises(DemandError, match="Unable to find daemon nowhere"):
        source(BindingsPool(None, ["nowhere"], module=FakeHTCondor(pool))).demand("sp")


def test_a_failing_pool_is_a_demand_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = FakePool.from_fixtures()
    pool.down_schedds.add("schedd2.example.org")
    with pytest.raises(DemandError, match=r"schedd schedd2\.example\.org: Failed to fetch ads"):
        source(BindingsPool(None, module=FakeHTCondor(pool))).demand("sp")
    with pytest.raises(DemandError, match="bad constraint"):
        BindingsPool(None, module=FakeHTCondor(pool)).idle_jobs("JobStatus == == 1")
    write_tools(tmp_path / "down", down=True)
    monkeypatch.setenv("PATH", str(tmp_path / "down"))
    with pytest.raises(DemandError, match="condor_status exited with status 1: CEDAR:6001:Failed to connect"):
        CommandPool(None).idle_jobs("true")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DemandError, match="condor_status not found: install HTCondor's tools"):
        CommandPool(None).idle_jobs("true")


def test_an_unreachable_collector_through_the_real_bindings_is_a_demand_error() -> None:
    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(DemandError, match=f"collector {closed}: Failed communication with collector"):
        BindingsPool(closed).idle_jobs("true")


def test_json_without_classad2_keeps_plain_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_classad2(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "classad2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_classad2)
    jobs = parse_json_ads((FIXTURES / "condor_q.schedd1.json").read_text(), ("ClusterId", "RequestMemory"))
    assert jobs[0] == {"ClusterId": 101, "RequestMemory": 2000}
    assert jobs[5] == {"ClusterId": 105, "RequestMemory": None}  # an expression: unknown, counted as 0 MB
    assert shapes(jobs[5:6]) == (JobShape(1, 0, 0, 1),)
    assert parse_json_ads("", ("ClusterId",)) == []
    with pytest.raises(DemandError, match="not a list of ClassAds"):
        parse_json_ads('{"ClusterId": 1}', ("ClusterId",))


# --- the machines' startds -------------------------------------------------------------------

def test_registered_machines_and_their_work_come_from_the_startd_ads(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from fakecondor import load_ads

    pool = FakePool(startds=load_ads(FIXTURES / "condor_status.startd.json"))
    by_bindings = source(BindingsPool("cm.example.org:9618", module=FakeHTCondor(pool)))
    # aaaa: its partitionable slot is unclaimed but a dynamic slot is claimed: busy; bbbb: idle; wn042 is
    # not a vcycle machine; the collector was asked for the space's startds only
    assert by_bindings.registered("grid") == {"vcycle-grid-atlas-aaaa": True, "vcycle-grid-atlas-bbbb": False}
    assert ("query", "Startd", 'VCYCLE_SPACE == "grid"') in pool.calls
    by_bindings.drain("grid", "vcycle-grid-atlas-bbbb")
    assert pool.commands == [("vcycle-grid-atlas-bbbb.example.org", "DaemonsOffPeaceful")]
    with pytest.raises(DemandError, match="has no startd in the pool"):
        by_bindings.drain("grid", "vcycle-grid-atlas-zzzz")
    calls = write_tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    by_tools = source(CommandPool("cm.example.org:9618", timeout=30))
    assert by_tools.registered("grid") == by_bindings.registered("grid")
    by_tools.drain("grid", "vcycle-grid-atlas-bbbb")
    lines = [json.loads(line) for line in calls.read_text().splitlines()]
    assert lines[-1] == ["condor_off", "-pool", "cm.example.org:9618", "-peaceful", "-name",
                         "vcycle-grid-atlas-bbbb.example.org"]

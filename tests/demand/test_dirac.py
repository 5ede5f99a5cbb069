"""``[demand NAME] type = dirac`` without a DIRAC server: the CE description each machinetype is to the Matcher,
task queues turned into demand, the worker process's failures as DemandError (with DIRAC installed: the real
worker against a Matcher that is not there), and the poller that wakes the daemon when jobs appear.
The real Matcher's answers are tested in tests/e2e/test_dirac_demand.py."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from vctest import load_text

from vcycle.core.model import Action, CloudStatus, JobShape
from vcycle.core.sections import Config
from vcycle.demand import make_source
from vcycle.demand.dirac import DiracDemand, Worker, ce_description, demand_of, job_processors
from vcycle.errors import DemandError
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector, free_port


def dirac_site(extra_demand: str = "", **mts: dict[str, object]) -> Config:
    lines = ["[settings]", "manager_name = mgr", "max_create_fraction = 1", "[space sp]", "api = fake",
             "processors_limit = 20", "[demand dirac]", "type = dirac",
             "matcher_url = dips://localhost:1/WorkloadManagement/Matcher", "vo = belle", extra_demand]
    for name, keys in (mts or {"mt": {}}).items():
        lines += [f"[machinetype sp {name}]", "user_data = ud", "backoff_seconds = 600", "fizzle_seconds = 300",
                  "target_share = 1", "demand = dirac", *(f"{k} = {v}" for k, v in keys.items())]
    return load_text("\n".join(lines) + "\n")


def test_a_machinetype_is_described_to_the_matcher_as_a_queue_of_its_site_and_size() -> None:
    config = dirac_site(mt={"dirac_site": "LCG.KEK.jp", "dirac_ce": "cloud.kek.jp", "dirac_queue": "long",
                            "dirac_tags": "cvmfs ssd", "dirac_required_tags": "belle2", "dirac_max_cpu_time": 2880,
                            "dirac_si00": 2500, "min_processors": 4, "mb_per_processor": 2000,
                            "dirac_platform": "x86_64-el9", "dirac_owner_group": "belle_user belle_prod"})
    assert ce_description(config.spaces["sp"].machinetypes["mt"], "belle") == {
        "Site": "LCG.KEK.jp", "GridCE": "cloud.kek.jp", "Queue": "long", "CEType": "Vcycle",
        "CPUTime": 1728000,  # DIRAC's 60 / 250 * maxCPUTime * SI00, as getQueuesResolved computes it
        "NumberOfProcessors": 4, "MaxRAM": 8000,
        "Tag": ["2Processors", "3Processors", "4Processors", "MultiProcessor", "cvmfs", "ssd"],
        "RequiredTag": ["belle2"], "Platform": "x86_64-el9", "VO": "belle",
        "OwnerGroup": ["belle_user", "belle_prod"]}


def test_defaults_follow_the_space_and_hs06() -> None:
    config = dirac_site(mt={"hs06_per_processor": 12})
    description = ce_description(config.spaces["sp"].machinetypes["mt"], None)
    assert (description["Site"], description["GridCE"], description["Queue"]) == ("sp", "sp", "default")
    assert description["CPUTime"] == 60 * 2880 * 3000 // 250  # SI00 = 250 x HS06
    assert description["Tag"] == [] and "VO" not in description and "OwnerGroup" not in description


@pytest.mark.parametrize(("tags", "processors"), [
    ([], 1), (["gpu"], 1), (["4Processors", "MultiProcessor"], 4), (["MultiProcessor"], 8), (["WholeNode"], 8),
    (["2Processors", "16Processors"], 16),
])
def test_a_job_asks_for_the_processors_its_queue_s_tags_say(tags: list[str], processors: int) -> None:
    assert job_processors(tags, 8) == processors


def test_task_queues_become_job_shapes_each_job_counting_for_its_processors() -> None:
    found = demand_of([{"jobs": 3, "tags": []}, {"jobs": 2, "tags": ["gpu"]}, {"jobs": 1, "tags": ["4Processors"]},
                       {"jobs": 0, "tags": ["8Processors"]}], machine_processors=4)
    assert found.shapes == (JobShape(1, 0, 0, 5), JobShape(4, 0, 0, 1))
    assert found.idle_jobs == 9 and found.known


class Answers:
    """A stand-in for the worker process (the real one is tested below and in tests/e2e): canned replies."""

    def __init__(self, *replies: dict[str, Any] | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.timeout = 1.0

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        pass


def source_of(config: Config, worker: Any) -> DiracDemand:
    demand = config.demands["dirac"]
    machinetypes = {"sp": {n: mt for n, mt in config.spaces["sp"].machinetypes.items()}}
    return DiracDemand("dirac", demand.options, machinetypes, worker)


def test_failing_dirac_makes_demand_unknown_creates_nothing_and_says_why_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = dirac_site(a={}, b={"dirac_vo": "lhcb"})
    worker = Answers(DemandError("DIRAC refused: getMatchingTaskQueues for sp/a: Cannot connect"))
    source = source_of(config, worker)
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {"dirac": source}, lambda *a: b"", clock)
    with caplog.at_level(logging.WARNING):
        report = run_cycle(ctx)
    assert cloud.ours() == []
    holds = [d.reason for d in report.decisions if d.action is Action.HOLD and d.machinetype in ("a", "b")]
    assert len(holds) == 2 and all("demand unknown" in h and "Cannot connect" in h for h in holds)
    assert len([r for r in caplog.records if "demand=dirac unknown" in r.getMessage()]) == 1
    # one question for both machinetypes, each with its own VO
    (request,) = worker.requests
    assert request["vo"] == {"sp/a": "belle", "sp/b": "lhcb"} and set(request["queues"]) == {"sp/a", "sp/b"}


def test_deletions_go_on_while_dirac_is_down(tmp_path: Path) -> None:
    config = dirac_site(mt={})
    answers = Answers({"ok": True, "queues": {"sp/mt": [{"jobs": 2, "tags": []}]}},
                      DemandError("no answer within 60s"))
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {"dirac": source_of(config, answers)},
                       lambda *a: b"", clock)
    assert run_cycle(ctx).counts["creates"] == 2
    done = cloud.ours()[0].name
    cloud.set_status(done, CloudStatus.STOPPED, "SHUTOFF")
    clock.advance(60)
    report = run_cycle(ctx)
    assert report.counts["deletes"] == 1 and report.counts["creates"] == 0


def test_the_poller_wakes_the_daemon_when_waiting_jobs_appear_and_the_cycle_uses_its_answer() -> None:
    config = dirac_site("poll_seconds = 0.5", mt={})
    nothing = {"ok": True, "queues": {"sp/mt": []}}
    work = {"ok": True, "queues": {"sp/mt": [{"jobs": 3, "tags": []}]}}
    answers = Answers(nothing, nothing, work)
    source = source_of(config, answers)
    assert source.watcher is not None
    source.watcher.seconds = 0.05  # quicker than the 0.5 s a configuration may ask for, to keep the test short
    woken = threading.Event()
    source.watch(woken.set)
    try:
        source.watcher.start()
        assert woken.wait(5), "the poller did not wake the daemon"
        asked = len(answers.requests)
        assert source.demand("sp")["mt"].idle_jobs == 3
        assert len(answers.requests) <= asked + 1  # a fresh poll is used, not asked again (or once, if stale)
    finally:
        source.close()


def test_nobody_to_wake_no_polling() -> None:
    config = dirac_site("poll_seconds = 0.5", mt={})
    answers = Answers({"ok": True, "queues": {"sp/mt": []}})
    source = source_of(config, answers)
    source.demand("sp")
    assert source.watcher is not None and source.watcher.thread is None and len(answers.requests) == 1
    source.close()


def test_polling_more_often_than_twice_a_second_is_refused() -> None:
    from vcycle.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[demand dirac\] poll_seconds: 0.1 is too often: 0.5 at least"):
        dirac_site("poll_seconds = 0.1", mt={})


def test_the_daemon_s_manager_gives_watching_sources_its_wake_up_and_closes_them(tmp_path: Path) -> None:
    from vcycle.loop.daemon import Manager

    config = dirac_site("poll_seconds = 1", mt={})
    woken: list[bool] = []
    manager = Manager(config, Store.open(f"sqlite:///{tmp_path}/state.db"), wake=lambda: woken.append(True))
    source = manager.sources["dirac"]
    assert isinstance(source, DiracDemand) and source.watcher is not None and source.watcher.on_change is not None
    source.watcher.on_change()
    assert woken == [True]
    manager.close()
    assert source.watcher is not None and source.watcher.stopping.is_set()


def test_the_section_names_dirac_python_and_credentials() -> None:
    config = dirac_site("python = /opt/dirac/bin/python\ntimeout_seconds = 7\nhost_cert = /h/c.pem", mt={})
    source = make_source(config.demands["dirac"], config.spaces)
    assert isinstance(source, DiracDemand)
    assert source.worker.command[0] == "/opt/dirac/bin/python" and source.worker.timeout == 7
    assert source.worker.settings["host_cert"] == "/h/c.pem"
    assert source.worker.settings["matcher_url"] == "dips://localhost:1/WorkloadManagement/Matcher"


def test_a_worker_that_cannot_start_or_does_not_answer_is_a_demand_error(tmp_path: Path) -> None:
    missing = Worker(str(tmp_path / "no-python"), {}, 5, "d")
    with pytest.raises(DemandError, match=r"DIRAC not asked: .*no-python"):
        missing.ask({"queues": {}})
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nsleep 30\n")
    hang.chmod(0o755)
    silent = Worker(str(hang), {}, 0.5, "d")
    started = time.monotonic()
    with pytest.raises(DemandError, match=r"no answer within 0.5s"):
        silent.ask({"queues": {}})
    assert time.monotonic() - started < 5 and silent.process is None  # killed, started afresh next time


def test_the_real_worker_with_dirac_and_no_matcher_reports_one_clear_error(dirac_python: str,
                                                                          tmp_path: Path) -> None:
    from vcycle.testing import make_server_pki

    make_server_pki(str(tmp_path))  # some certificate and key: the connection fails before they matter
    settings = {"configuration": [], "matcher_url": f"dips://localhost:{free_port()}/WorkloadManagement/Matcher",
                "host_cert": str(tmp_path / "server.pem"), "host_key": str(tmp_path / "server.key"),
                "ca_dir": str(tmp_path)}
    worker = Worker(dirac_python, settings, 60, "d")
    try:
        with pytest.raises(DemandError) as caught:
            worker.ask({"queues": {"sp/mt": {"Site": "LCG.X.org", "CPUTime": 1000}}, "vo": {}})
    finally:
        worker.close()
    message = str(caught.value)
    assert message.startswith("DIRAC refused: getMatchingTaskQueues for sp/mt:")
    assert "\n" not in message and "Traceback" not in message

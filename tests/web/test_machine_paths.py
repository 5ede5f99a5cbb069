"""What machines call, through the real application and a real SQLite store (Starlette's test client)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from webtest import DN, Site, make_site

from vcycle.core.states import MachineState


def test_machinefeatures_and_jobfeatures_as_the_old_vcycle_served_them(site: Site) -> None:
    site.machine("m1")
    listing = site.client.get("/machines/sp/m1/machinefeatures/")
    assert listing.status_code == 200
    assert listing.text.split() == ["jobslots", "log_cores", "phys_cores", "shutdowntime", "total_cpu"]
    assert site.client.get("/machines/sp/m1/machinefeatures/total_cpu").text == "2\n"
    assert site.client.get("/machines/sp/m1/jobfeatures/allocated_cpu").text == "2\n"
    # the old vcycle's path had no space in it
    assert site.client.get("/machines/m1/jobfeatures/allocated_cpu").text == "2\n"
    missing = site.client.get("/machines/sp/m1/jobfeatures/no_such_key")
    assert missing.status_code == 404 and "no_such_key" in missing.text


def test_unknown_machines_and_paths_are_404_with_a_reason(site: Site) -> None:
    answer = site.client.get("/machines/sp/ghost/machinefeatures/total_cpu")
    assert answer.status_code == 404 and "no live machine sp/ghost" in answer.text
    assert site.client.get("/machines/sp").status_code == 404
    assert site.client.get("/nowhere").status_code == 404


def test_joboutputs_need_the_machines_own_token(site: Site) -> None:
    site.machine("m1")
    site.machine("m2")
    url = "/machines/sp/m1/joboutputs/pilot.log"
    none = site.client.put(url, content=b"log")
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    other = site.client.put(url, content=b"log", headers=site.auth("m2"))
    assert other.status_code == 403 and "does not belong to machine sp/m1" in other.text
    forged = site.client.put(url, content=b"log", headers={"Authorization": "Bearer " + "x" * 43})
    assert forged.status_code == 403
    assert site.client.put(url, content=b"log", headers={"Authorization": "Basic abc"}).status_code == 401
    assert not (Path(site.config.settings.joboutputs_dir) / "sp/m1/pilot.log").exists()
    done = site.client.put(url, content=b"the pilot's log\n", headers=site.auth("m1"))
    assert done.status_code == 204
    assert (Path(site.config.settings.joboutputs_dir) / "sp/m1/pilot.log").read_bytes() == b"the pilot's log\n"


def test_a_token_stops_working_when_its_machine_is_gone(site: Site) -> None:
    record = site.machine("m1")
    assert site.client.put("/machines/sp/m1/joboutputs/a", content=b"1", headers=site.auth("m1")).status_code == 204
    from vcycle.core.model import transition

    state = site.store.load("sp")
    site.store.write("sp", state.version, [transition(record, MachineState.GONE, site.clock(), "gone")])
    site.endpoint.directory.refresh()
    answer = site.client.put("/machines/sp/m1/joboutputs/a", content=b"2", headers=site.auth("m1"))
    assert answer.status_code == 404


def test_the_heartbeat_file_is_batched_into_the_store(site: Site) -> None:
    site.machine("m1")
    for _ in range(5):
        answer = site.client.put("/machines/sp/m1/joboutputs/vm-heartbeat", content=b"1767268800\n",
                                 headers=site.auth("m1"))
        assert answer.status_code == 204
    assert site.store.heartbeats("sp") == {}  # nothing written per request
    assert site.endpoint.beats.pending() == 1  # five requests, one pending row
    assert site.endpoint.beats.flush() == 1
    beat = site.store.heartbeats("sp")["m1"]
    assert beat.at == site.clock() and beat.address == "testclient"
    assert (Path(site.config.settings.joboutputs_dir) / "sp/m1/vm-heartbeat").read_bytes() == b"1767268800\n"


def test_a_shutdown_message_reaches_sync_and_is_not_erased_by_a_later_heartbeat(site: Site) -> None:
    site.machine("m1")
    headers = site.auth("m1")
    assert site.client.put("/machines/sp/m1/joboutputs/shutdown_message", content=b"300 Nothing to do\n",
                           headers=headers).status_code == 204
    assert site.store.heartbeats("sp")["m1"].shutdown_message == "300 Nothing to do"  # written at once
    site.clock.advance(60)
    site.client.put("/machines/sp/m1/joboutputs/vm-heartbeat", content=b"x", headers=headers)
    site.endpoint.beats.flush()
    beat = site.store.heartbeats("sp")["m1"]
    assert beat.shutdown_message == "300 Nothing to do" and beat.at == site.clock()

    from vcycle.core.sync import sync

    state = site.store.load("sp")
    result = sync(state.records, [], {"m1": beat}, site.clock(), space=site.config.spaces["sp"],
                  settings=site.config.settings)
    assert "m1 stopped with '300 Nothing to do'" in result.backoffs["mt"].reason


@pytest.mark.parametrize("name", [".hidden", "..", "a%2Fb", "..%2F..%2Fetc%2Fpasswd", "-" + "x" * 200, "a b"])
def test_unsafe_file_names_are_refused_and_nothing_is_written(site: Site, name: str) -> None:
    site.machine("m1")
    answer = site.client.put(f"/machines/sp/m1/joboutputs/{name}", content=b"x", headers=site.auth("m1"))
    assert answer.status_code in (400, 404)
    root = Path(site.config.settings.joboutputs_dir)
    assert not root.exists() or [p for p in root.rglob("*") if p.is_file()] == []
    assert not (Path(site.config.settings.state_dir) / "etc").exists()


def test_path_traversal_in_the_space_or_machine_finds_nothing(site: Site) -> None:
    site.machine("m1")
    for path in ("/machines/../m1/joboutputs/x", "/machines/sp/../../joboutputs/x", "/machines/%2E%2E/m1/joboutputs/x"):
        answer = site.client.put(path, content=b"x", headers=site.auth("m1"))
        assert answer.status_code in (400, 403, 404), path


def test_size_limits_per_file_and_per_machine(tmp_path: Path) -> None:
    site = make_site(tmp_path, settings={"joboutputs_max_file_bytes": 1000, "joboutputs_max_machine_bytes": 2500})
    site.machine("m1")
    headers = site.auth("m1")
    big = site.client.put("/machines/sp/m1/joboutputs/big", content=b"x" * 1001, headers=headers)
    assert big.status_code == 413 and "at most 1000" in big.text
    for n in range(2):
        assert site.client.put(f"/machines/sp/m1/joboutputs/f{n}", content=b"x" * 1000,
                               headers=headers).status_code == 204
    over = site.client.put("/machines/sp/m1/joboutputs/f2", content=b"x" * 1000, headers=headers)
    assert over.status_code == 413 and "at most 2500" in over.text
    # replacing a file counts its new size, not both
    assert site.client.put("/machines/sp/m1/joboutputs/f1", content=b"y" * 1000, headers=headers).status_code == 204
    chunked = site.client.put("/machines/sp/m1/joboutputs/stream", content=iter([b"x" * 600, b"x" * 600]),
                              headers=headers)
    assert chunked.status_code == 413
    names = sorted(os.listdir(Path(site.config.settings.joboutputs_dir) / "sp/m1"))
    assert names == ["f0", "f1"]  # nothing half-written, no temporary files left


def test_requests_per_machine_are_bounded(tmp_path: Path) -> None:
    site = make_site(tmp_path, settings={"machine_requests_per_minute": 60})
    site.machine("m1")
    site.machine("m2")
    answers = [site.client.put("/machines/sp/m1/joboutputs/vm-heartbeat", content=b"x", headers=site.auth("m1"))
               for _ in range(12)]
    codes = [a.status_code for a in answers]
    assert codes[:10] == [204] * 10 and codes[10:] == [429, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    # another machine is not held back by the first one
    assert site.client.put("/machines/sp/m2/joboutputs/vm-heartbeat", content=b"x",
                           headers=site.auth("m2")).status_code == 204


def test_json_heartbeats_are_validated_and_kept(site: Site) -> None:
    site.machine("m1")
    url = "/api/v1/machines/sp/m1/heartbeat"
    headers = site.auth("m1")
    assert site.client.post(url, json={"load": 1.5, "running_jobs": 3, "text": "busy"},
                            headers=headers).status_code == 204
    bad = site.client.post(url, content=b"{not json", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"].startswith("the heartbeat body is not JSON")
    assert site.client.post(url, json={"load": -1}, headers=headers).status_code == 422
    assert site.client.post(url, json={"running_jobs": "many"}, headers=headers).status_code == 422
    assert site.client.post(url, json={"extra": 1}, headers=headers).status_code == 422
    assert site.client.post(url, json=[1, 2], headers=headers).status_code == 422
    assert site.client.post(url, content=b"{" + b" " * 5000 + b"}", headers=headers).status_code == 413
    assert site.client.post(url, json={}, headers=site.auth("m1") | {"Authorization": "Bearer no"}).status_code == 403
    site.endpoint.beats.flush()
    beat = site.store.heartbeats("sp")["m1"]
    assert json.loads(beat.detail or "") == {"load": 1.5, "running_jobs": 3, "text": "busy"}


def test_user_data_is_rendered_again_for_the_token_presented(site: Site) -> None:
    site.machine("m1")
    answer = site.client.get("/api/v1/machines/sp/m1/user-data", headers=site.auth("m1"))
    assert answer.status_code == 200
    url = f"https://{site.config.spaces['sp'].https_host}:443/machines/sp/m1/joboutputs"
    assert answer.content.decode() == f"#!/bin/sh\necho m1 {site.tokens['m1']} {url}\n"
    assert site.client.get("/api/v1/machines/sp/m1/user-data").status_code == 401


def test_a_sitedirector_pilot_s_user_data_is_gone_for_good(tmp_path: Path) -> None:
    """Its wrapper (with a proxy) was handed to the cloud once and not kept: rendering again would start a
    different pilot."""
    template = tmp_path / "ud.sh.j2"
    site = make_site(tmp_path, machinetypes={"pilot": {"user_data": str(template), "demand": "pilots"}},
                     extra="[demand pilots]\ntype = sitedirector\n")
    from vcycle.store.pilots import PilotBook

    book = PilotBook(site.store)
    book.add("sp", "pilot", "ce", "default", [("p1", "s" * 32)], "#!/bin/sh\nwrapper with a proxy\n", site.clock())
    site.machine("p1", mt="pilot")
    site.store.write("sp", site.store.load("sp").version, steps=[book.claim("sp", ["p1"], site.clock())])
    site.machine("other", mt="pilot")  # a machine of the same machinetype that ran no pilot of a factory
    template.write_text("#!/bin/sh\necho {{ machine }}\n")
    assert site.client.get("/api/v1/machines/sp/other/user-data", headers=site.auth("other")).status_code == 200
    answer = site.client.get("/api/v1/machines/sp/p1/user-data", headers=site.auth("p1"))
    assert answer.status_code == 410 and "pilot wrapper" in answer.json()["error"]


def test_x509_dn_through_a_trusted_proxy_must_equal_not_start_with(tmp_path: Path) -> None:
    site = make_site(tmp_path, settings={"trusted_proxies": "testclient"})
    site.machine("m1")
    url = "/machines/sp/m1/joboutputs/log"
    rfc2253 = "CN=pilot robot,OU=robots,DC=example,DC=org"
    ok = site.client.put(url, content=b"x", headers={"X-SSL-Client-S-DN": rfc2253})
    assert ok.status_code == 204
    assert site.client.put(url, content=b"x", headers={"X-SSL-Client-S-DN": DN}).status_code == 204
    longer = site.client.put(url, content=b"x", headers={"X-SSL-Client-S-DN": DN + " else"})
    assert longer.status_code == 403 and "may not act for machine" in longer.text
    extra_cn = site.client.put(url, content=b"x", headers={"X-SSL-Client-S-DN": DN + "/CN=someone"})
    assert extra_cn.status_code == 403


def test_the_dn_header_of_an_untrusted_client_is_ignored(site: Site) -> None:
    site.machine("m1")
    answer = site.client.put("/machines/sp/m1/joboutputs/log", content=b"x", headers={"X-SSL-Client-S-DN": DN})
    assert answer.status_code == 401


def test_heartbeat_lists_show_running_machines_with_a_current_heartbeat(site: Site) -> None:
    site.machine("sq1", mt="squid")
    site.machine("sq2", mt="squid")
    site.machine("sq3", mt="squid", state=MachineState.STARTING)
    site.machine("m1")
    for name in ("sq1", "sq3", "m1"):
        site.client.put(f"/machines/sp/{name}/joboutputs/vm-heartbeat", content=b"x", headers=site.auth(name))
    site.endpoint.beats.flush()
    now = int(site.clock().timestamp())
    for path in ("/heartbeatlists/sp/squid", "/spaces/sp/heartbeatmachines/squid"):
        answer = site.client.get(path)
        assert answer.status_code == 200 and answer.text == f"{now} sq1 testclient\n"
    site.clock.advance(601)  # past heartbeat_seconds
    assert site.client.get("/heartbeatlists/sp/squid").text == ""
    assert site.client.get("/heartbeatlists/sp/nothing").status_code == 404


def test_a_machine_created_since_the_last_refresh_is_found_in_the_store(site: Site) -> None:
    site.machine("fresh", refresh=False)
    assert site.endpoint.directory.get("sp", "fresh") is None
    answer = site.client.put("/machines/sp/fresh/joboutputs/log", content=b"x", headers=site.auth("fresh"))
    assert answer.status_code == 204


def test_lookups_of_unknown_machines_are_bounded(site: Site) -> None:
    calls = []
    site.endpoint.monotonic = lambda: 100.0  # all within one second
    real = site.store.find
    site.store.find = lambda name, space=None: calls.append(name) or real(name, space)  # type: ignore[method-assign]
    for n in range(80):
        assert site.client.get(f"/machines/sp/ghost{n}/machinefeatures/total_cpu").status_code == 404
    assert len(calls) == 50  # the rest were answered from memory: MISSES_PER_SECOND


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KB tmpfs (needs root and mount), so that a write really meets a full disk."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_a_full_disk_is_answered_507_and_nothing_half_written_stays(tmp_path: Path, small_disk: Path) -> None:
    site = make_site(tmp_path / "site", settings={"joboutputs_dir": small_disk})
    site.machine("m1")
    headers = site.auth("m1")
    assert site.client.put("/machines/sp/m1/joboutputs/first", content=b"x" * 40_000,
                           headers=headers).status_code == 204
    full = site.client.put("/machines/sp/m1/joboutputs/second", content=b"y" * 40_000, headers=headers)
    assert full.status_code == 507 and "nothing was kept" in full.text
    assert sorted(os.listdir(small_disk / "sp" / "m1")) == ["first"]  # no temporary file left behind
    assert (small_disk / "sp" / "m1" / "first").read_bytes() == b"x" * 40_000


def test_joboutputs_of_machines_gone_longer_than_cleanup_hours_are_removed(tmp_path: Path) -> None:
    from vcycle.store.joboutputs import Files, Joboutputs

    store = Joboutputs(Files(str(tmp_path / "jo")), 1000, 10000)
    for machine in ("live", "recent", "old"):
        store.write("sp", machine, "log", b"x")
    old = tmp_path / "jo" / "sp" / "old"
    os.utime(old, (1_000_000, 1_000_000))
    now = 1_000_000 + 3 * 3600.0
    os.utime(tmp_path / "jo" / "sp" / "recent", (now - 3600, now - 3600))
    os.utime(tmp_path / "jo" / "sp" / "live", (1_000_000, 1_000_000))
    removed = store.cleanup({("sp", "live")}, lambda space: 2 * 3600.0, now)
    assert removed == 1
    assert sorted(os.listdir(tmp_path / "jo" / "sp")) == ["live", "recent"]

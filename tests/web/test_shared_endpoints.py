"""Two endpoints, as on two manager hosts, over one real PostgreSQL store: a machine may talk to either."""

from __future__ import annotations

from pathlib import Path

from webtest import Site, make_site


def two_hosts(tmp_path: Path, postgres_url: str) -> tuple[Site, Site]:
    settings = {"state_url": postgres_url, "joboutputs_in_store": "true"}
    return make_site(tmp_path / "a", settings), make_site(tmp_path / "b", settings)


def test_joboutputs_written_through_one_host_are_served_by_the_other(tmp_path: Path, postgres_url: str) -> None:
    a, b = two_hosts(tmp_path, postgres_url)
    a.machine("m1")
    b.endpoint.directory.refresh()
    put = a.client.put("/machines/sp/m1/joboutputs/pilot.log", content=b"the pilot's log\n", headers=a.auth("m1"))
    assert put.status_code == 204
    served = b.client.get("/ui/machines/sp/m1/joboutputs/pilot.log")
    assert served.status_code == 200 and served.text == "the pilot's log\n"
    page = b.client.get("/ui/machines/sp/m1")
    assert page.status_code == 200 and "pilot.log" in page.text
    assert not (tmp_path / "a" / "joboutputs").exists()  # nothing on host a's disk
    again = b.client.put("/machines/sp/m1/joboutputs/pilot.log", content=b"longer\n", headers=a.auth("m1"))
    assert again.status_code == 204
    assert a.client.get("/ui/machines/sp/m1/joboutputs/pilot.log").text == "longer\n"
    assert b.client.get("/ui/machines/sp/m1/joboutputs/nothing").status_code == 404


def test_heartbeats_through_both_hosts_keep_the_latest(tmp_path: Path, postgres_url: str) -> None:
    a, b = two_hosts(tmp_path, postgres_url)
    a.machine("m1")
    b.endpoint.directory.refresh()
    first = a.clock()
    assert a.client.put("/machines/sp/m1/joboutputs/vm-heartbeat", content=b"1\n",
                        headers=a.auth("m1")).status_code == 204
    b.clock.advance(60)
    assert b.client.put("/machines/sp/m1/joboutputs/vm-heartbeat", content=b"2\n",
                        headers=a.auth("m1")).status_code == 204
    assert b.endpoint.beats.flush() == 1  # the later beat is written first,
    assert a.endpoint.beats.flush() == 1  # the earlier one after it
    beat = a.store.heartbeats("sp")["m1"]
    assert beat.at == b.clock() and beat.at > first
    assert b.client.get("/ui/machines/sp/m1/joboutputs/vm-heartbeat").status_code == 200  # the file, in the store

"""Vacuum pipes expand into machinetypes as the old vcycle did; http(s) pipes are cached."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from vcycle.config import load_config

PIPE = {
    "machinetypes": [
        {"suffix": "prod", "target_share": 3, "user_data": "https://vo.example.org/user_data",
         "backoff_seconds": 600, "fizzle_seconds": 600, "max_wallclock_seconds": 100000,
         "user_data_option_queue": "prod", "machine_model": "cernvm3", "cache_seconds": 3600},
        {"suffix": "test", "target_share": 1, "user_data": "user_data_test", "backoff_seconds": 60,
         "fizzle_seconds": 60, "heartbeat_file": "../../etc/passwd", "weird_option": 1},
        {"suffix": "docker", "machine_model": "docker", "target_share": 1},
    ]
}


def write(tmp_path: Path, pipe_url: str, extra: str = "") -> Path:
    conf = tmp_path / "v.conf"
    conf.write_text(f"[settings]\nstate_dir = {tmp_path / 'state'}\n[space sp]\napi = fake\n"
                    f"[vacuum_pipe sp lhcb]\nvacuum_pipe_url = {pipe_url}\ntarget_share = 8\n"
                    f"user_data_option_cvmfs_proxy = http://squid:3128\n{extra}")
    return conf


def test_pipe_machinetypes_are_created_with_split_shares(tmp_path: Path) -> None:
    pipe = tmp_path / "lhcb.pipe"
    pipe.write_text(json.dumps(PIPE))
    config = load_config([write(tmp_path, str(pipe))], hostname="h")
    mts = config.spaces["sp"].machinetypes
    assert sorted(mts) == ["lhcb-prod", "lhcb-test"]
    assert (mts["lhcb-prod"].target_share, mts["lhcb-test"].target_share) == (6.0, 2.0)
    assert mts["lhcb-prod"].max_wallclock_seconds == 100000
    assert mts["lhcb-prod"].user_data_options == {"user_data_option_cvmfs_proxy": "http://squid:3128",
                                                  "user_data_option_queue": "prod"}
    assert mts["lhcb-prod"].directory == str(tmp_path / "state" / "spaces" / "sp" / "machinetypes" / "lhcb")
    assert mts["lhcb-test"].heartbeat_file is None  # a path outside the machinetype is refused
    messages = " ".join(w.message for w in config.warnings)
    assert "heartbeat_file cannot contain a '/'" in messages
    assert "weird_option is not accepted" in messages
    assert "machine_model docker is not supported" in messages


def test_site_sections_win_over_the_pipe(tmp_path: Path) -> None:
    pipe = tmp_path / "lhcb.pipe"
    pipe.write_text(json.dumps(PIPE))
    extra = "[machinetype sp lhcb-prod]\nmax_wallclock_seconds = 3600\n"
    config = load_config([write(tmp_path, f"file://{pipe}", extra)], hostname="h")
    assert config.spaces["sp"].machinetypes["lhcb-prod"].max_wallclock_seconds == 3600


def test_missing_pipe_is_a_warning_not_an_error(tmp_path: Path) -> None:
    config = load_config([write(tmp_path, "https://vo.example.org/lhcb.pipe")], hostname="h")
    assert config.spaces["sp"].machinetypes == {}
    assert any("not fetched yet" in w.message for w in config.warnings)


class _PipeHandler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.hits.append(self.headers.get("If-Modified-Since"))
        if self.headers.get("If-Modified-Since"):
            self.send_response(304)
            self.end_headers()
            return
        body = json.dumps(PIPE).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pipe_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PipeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/lhcb.pipe"
    server.shutdown()


def test_http_pipe_is_fetched_cached_and_revalidated(tmp_path: Path, pipe_server: str) -> None:
    _PipeHandler.hits = []
    conf = write(tmp_path, pipe_server)
    first = load_config([conf], hostname="h", fetch_pipes=True)
    assert sorted(first.spaces["sp"].machinetypes) == ["lhcb-prod", "lhcb-test"]
    second = load_config([conf], hostname="h", fetch_pipes=True)  # 304: the cached copy is used
    assert sorted(second.spaces["sp"].machinetypes) == ["lhcb-prod", "lhcb-test"]
    assert _PipeHandler.hits[0] is None and _PipeHandler.hits[1] is not None
    offline = load_config([conf], hostname="h")  # no fetch: the cache alone
    assert sorted(offline.spaces["sp"].machinetypes) == ["lhcb-prod", "lhcb-test"]

"""User-data rendering: old templates exactly as before, jinja2 strictly, parts as MIME, URLs cached."""

from __future__ import annotations

import email
import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
from vctest import load_text

from vcycle import __version__
from vcycle.cli.main import main
from vcycle.core.model import CreateOrder
from vcycle.core.sections import Config
from vcycle.errors import RenderError
from vcycle.userdata.multipart import part_type
from vcycle.userdata.render import render_user_data
from vcycle.userdata.sources import Fetcher

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SHUTDOWN = datetime(2027, 1, 1, tzinfo=UTC)


def site(tmp_path: Path, user_data: str, extra: str = "") -> Config:
    files = tmp_path / "spaces" / "sp.example.org" / "machinetypes" / "mt" / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "hostcert.pem").write_text("-----BEGIN CERTIFICATE-----\ngolden\n-----END CERTIFICATE-----\n")
    (files / "every-pattern").write_text((GOLDEN / "every-pattern.user_data").read_text())
    return load_text(f"""
[settings]
state_dir = {tmp_path}
manager_name = factory.example.org
[space sp.example.org]
api = fake
gocdb_sitename = UKI-EXAMPLE
https_host = vcycle.example.org
https_port = 8443
[machinetype sp.example.org mt]
user_data = {user_data}
root_image = https://repo.example.org/cernvm4.iso
backoff_seconds = 1
fizzle_seconds = 1
user_data_option_cvmfs_proxy = http://squid.example.org:3128
user_data_file_hostcert = hostcert.pem
{extra}""")


def render(config: Config, fetcher: Fetcher | None = None, token: str | None = None) -> str:
    space = config.spaces["sp.example.org"]
    order = CreateOrder(space.name, "mt", 4, None, SHUTDOWN, None, "test")
    return render_user_data(space, space.machinetypes["mt"], "vcycle-mt-golden0001", order, "req-golden",
                            manager="factory.example.org", fetcher=fetcher, token=token).decode()


def test_old_template_with_every_pattern_matches_the_golden_file(tmp_path: Path) -> None:
    expected = (GOLDEN / "every-pattern.expected").read_text().replace("VERSION", __version__)
    assert render(site(tmp_path, "every-pattern")) == expected


def test_missing_template_is_a_render_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"no such file .*and no shipped template"):
        render(site(tmp_path, "nowhere"))


def test_shipped_template_is_found_by_name(tmp_path: Path) -> None:
    text = render(site(tmp_path, "pilot-container"))
    assert "/machines/sp.example.org/vcycle-mt-golden0001/machinefeatures" in text and "##" not in text


def test_jinja2_template_gets_the_machine_context(tmp_path: Path) -> None:
    config = site(tmp_path, "start.j2")
    (tmp_path / "spaces/sp.example.org/machinetypes/mt/files/start.j2").write_text(
        "#!/bin/sh\n# {{ machine }} in {{ space }} at {{ site }}: {{ processors }} processors until "
        "{{ shutdown_time }}\nexport HEARTBEAT={{ heartbeat_url }} PROXY={{ options.cvmfs_proxy }}\n"
        "{% if token is defined %}TOKEN={{ token }}{% endif %}\n")
    text = render(config, token="t0k3n")
    assert "# vcycle-mt-golden0001 in sp.example.org at UKI-EXAMPLE: 4 processors until 1798761600" in text
    assert "HEARTBEAT=https://vcycle.example.org:8443/api/v1/machines/sp.example.org/vcycle-mt-golden0001/heartbeat"\
        in text
    assert "PROXY=http://squid.example.org:3128" in text and "TOKEN=t0k3n" in text


def test_jinja2_missing_value_is_an_error_naming_it(tmp_path: Path) -> None:
    config = site(tmp_path, "bad.j2")
    (tmp_path / "spaces/sp.example.org/machinetypes/mt/files/bad.j2").write_text("{{ options.pool_password }}\n")
    with pytest.raises(RenderError, match=r"bad\.j2: .*pool_password"):
        render(config)


def test_several_templates_become_one_mime_multipart(tmp_path: Path) -> None:
    files = tmp_path / "spaces/sp.example.org/machinetypes/mt/files"
    config = site(tmp_path, "config.yaml pilot-container boot.sh")
    (files / "config.yaml").write_text("#cloud-config\nruncmd:\n  - echo ##user_data_machine_hostname##\n")
    (files / "boot.sh").write_text("#cloud-boothook\n#!/bin/sh\necho early\n")
    message = email.message_from_string(render(config))
    assert message.get_content_type() == "multipart/mixed"
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript",
                                                      "text/cloud-boothook"]
    assert "echo vcycle-mt-golden0001" in parts[0].get_payload(decode=True).decode()


@pytest.mark.parametrize(("start", "subtype"), [
    ("#cloud-config\n", "cloud-config"), ("#!/bin/bash\n", "x-shellscript"), ("#cloud-boothook\n", "cloud-boothook"),
    ("#include\nhttp://x\n", "x-include-url"), ("## template: jinja\n", "jinja2"), ("hello\n", "plain"),
])
def test_part_types_follow_cloud_init(start: str, subtype: str) -> None:
    assert part_type(start) == subtype


class _TemplateServer(http.server.BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b"#!/bin/sh\necho ##user_data_space##\n"
    status: ClassVar[int] = 200
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("If-Modified-Since"))
        if self.status != 200:
            self.send_response(self.status)
            self.end_headers()
            return
        if self.headers.get("If-Modified-Since"):
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def template_url() -> Iterator[str]:
    _TemplateServer.seen, _TemplateServer.status = [], 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TemplateServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/user_data"
    server.shutdown()


def test_url_templates_are_fetched_cached_and_revalidated(tmp_path: Path, template_url: str) -> None:
    config = site(tmp_path, template_url)
    fetcher = Fetcher(str(tmp_path / "cache"), revalidate_seconds=0)
    assert render(config, fetcher) == "#!/bin/sh\necho sp.example.org\n"
    assert render(config, fetcher) == "#!/bin/sh\necho sp.example.org\n"  # 304: the cached copy
    assert _TemplateServer.seen[0] is None and _TemplateServer.seen[1] == "Wed, 01 Jan 2025 00:00:00 GMT"


def test_a_failed_fetch_uses_the_cached_copy_or_refuses(tmp_path: Path, template_url: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    config = site(tmp_path, template_url)
    fetcher = Fetcher(str(tmp_path / "cache"), revalidate_seconds=0)
    render(config, fetcher)
    _TemplateServer.status = 500
    assert render(config, fetcher) == "#!/bin/sh\necho sp.example.org\n"
    assert "using the cached copy" in caplog.text
    with pytest.raises(RenderError, match="HTTP 500"):
        render(config, Fetcher(str(tmp_path / "empty-cache")))


def test_vcycle_render_prints_the_user_data_its_size_and_masks_secrets(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    files = tmp_path / "spaces/sp.example.org/machinetypes/mt/files"
    config_file = tmp_path / "v.conf"
    config_file.write_text(f"[settings]\nstate_dir = {tmp_path}\n[space sp.example.org]\napi = ec2\n"
                           "[machinetype sp.example.org mt]\nuser_data = secret.sh\nbackoff_seconds = 1\n"
                           "fizzle_seconds = 1\nuser_data_option_pool_password = hunter2\nroot_image = image:ami-1\n"
                           "flavor_names = m5.large\n")
    files.mkdir(parents=True)
    (files / "secret.sh").write_text("#!/bin/sh\nPOOL=##user_data_option_pool_password##\n")
    assert main(["render", "--config", str(config_file), "sp.example.org", "mt"]) == 0
    out, err = capsys.readouterr()
    assert "POOL=********" in out and "hunter2" not in out
    assert "bytes" in err and "ec2 takes 16384 bytes: fits" in err
    assert main(["render", "--config", str(config_file), "sp.example.org", "mt", "--show-secrets"]) == 0
    assert "POOL=hunter2" in capsys.readouterr().out

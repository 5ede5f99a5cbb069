"""The files a site installs, checked by the tools that will read them: systemd's own, and pip's wheel.

``systemd-analyze verify`` reads the unit as systemd would (every key known,
every command executable); ``systemd-sysusers`` and ``systemd-tmpfiles`` make
the user and the directories in a scratch root, so the unit's ``User=`` and
the cron line's log directory are shown to exist and belong to that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ETC = REPO / "etc"
VCYCLE = Path(sys.executable).parent / "vcycle"
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is installed by make tools (package systemd)")


def verify(unit: Path, tmp_path: Path, text: str | None = None) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify of ``unit`` with /usr/bin/vcycle read as this checkout's vcycle."""
    copy = tmp_path / "vcycle.service"
    copy.write_text((text if text is not None else unit.read_text()).replace("/usr/bin/vcycle", str(VCYCLE)))
    return subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60,
                          check=False)


@needs_systemd
def test_systemd_analyze_verify_passes_the_unit_without_a_word(tmp_path: Path) -> None:
    done = verify(ETC / "systemd" / "vcycle.service", tmp_path)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


@needs_systemd
def test_verify_does_catch_a_mistyped_key_and_a_missing_command(tmp_path: Path) -> None:
    """The check above can fail: a typo in a key, and a command that is not there, are both reported."""
    unit = ETC / "systemd" / "vcycle.service"
    typo = verify(unit, tmp_path, unit.read_text().replace("AmbientCapabilities=", "AmbientCapabilitis="))
    assert "Unknown key 'AmbientCapabilitis'" in typo.stderr
    missing = verify(unit, tmp_path, unit.read_text().replace("/usr/bin/vcycle daemon", "/no/such/vcycle daemon"))
    assert missing.returncode != 0 and "/no/such/vcycle" in missing.stderr


def test_the_unit_may_bind_443_and_has_its_directories() -> None:
    keys = dict(line.split("=", 1) for line in (ETC / "systemd" / "vcycle.service").read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    assert keys["User"] == "vcycle" and keys["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert keys["StateDirectory"] == "vcycle" and keys["LogsDirectory"] == "vcycle"
    assert keys["ExecStartPre"].endswith("check-config --quiet")
    example = (ETC / "vcycle.conf.example").read_text()
    assert ":443" in example  # the example's port needs the capability above
    assert keys["Documentation"] == "file:///usr/share/doc/vcycle/README.md"


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
                    reason="systemd's sysusers and tmpfiles are installed by make tools (package systemd)")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles --root chowns to the new user: needs root")
def test_sysusers_and_tmpfiles_make_the_user_and_the_directories_the_cron_line_writes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(["systemd-sysusers", f"--root={root}", str(ETC / "sysusers.d" / "vcycle.conf")], check=True,
                   capture_output=True, timeout=60)
    passwd = [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()]
    (user,) = [entry for entry in passwd if entry[0] == "vcycle"]
    uid = int(user[2])
    assert user[5] == "/var/lib/vcycle" and user[6].endswith("nologin")
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(ETC / "tmpfiles.d" / "vcycle.conf")],
                   check=True, capture_output=True, timeout=60)
    for directory in ("var/lib/vcycle", "var/log/vcycle"):
        found = (root / directory).stat()
        assert found.st_uid == uid and oct(found.st_mode & 0o777) == "0o750"
    cron = next(line for line in (ETC / "cron.d" / "vcycle").read_text().splitlines()
                if line and not line.startswith("#"))
    assert cron.split()[5] == "vcycle" and "--log-file /var/log/vcycle/cycle.log" in cron
    assert ">>" not in cron  # vcycle writes its own log, in a directory its user owns
    rotate = (ETC / "logrotate.d" / "vcycle").read_text()
    assert rotate.startswith("# /etc/logrotate.d/vcycle") and "/var/log/vcycle/*.log {" in rotate
    assert "su vcycle vcycle" in rotate


def test_the_wheel_installs_the_documentation_and_the_deployment_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = glob.glob(str(tmp_path / "vcycle-*.whl"))
    names = {name.split(".data/data/", 1)[1] for name in zipfile.ZipFile(wheel).namelist() if ".data/data/" in name}
    assert {"share/doc/vcycle/README.md", "share/vcycle/etc/systemd/vcycle.service",
            "share/vcycle/etc/sysusers.d/vcycle.conf", "share/vcycle/etc/tmpfiles.d/vcycle.conf",
            "share/vcycle/etc/cron.d/vcycle", "share/vcycle/etc/logrotate.d/vcycle",
            "share/vcycle/etc/vcycle.conf.example"} <= names
    members = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "vcycle").rglob("__init__.py")
                if "connectors" not in p.parts and "userdata" not in p.parts}
    missing = {p for p in packages if f"{p}/__init__.py" not in members}
    assert not missing, f"packages left out of the wheel ([tool.setuptools] packages): {sorted(missing)}"
    assert {"vcycle/connectors/ec2.py", "vcycle/userdata/templates/pilot-container.j2"} <= members
    page = {f"vcycle/web/{p.relative_to(REPO / 'vcycle' / 'web')}" for d in ("templates", "static")
            for p in (REPO / "vcycle" / "web" / d).iterdir()}
    assert page <= members, f"the status page's files left out of the wheel: {sorted(page - members)}"

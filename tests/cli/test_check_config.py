"""`vcycle check-config`: prints the effective configuration, secrets masked; exit 0 or 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vcycle.cli.main import main
from vcycle.cli.show import mask_url

REPO = Path(__file__).resolve().parents[2]


def test_valid_file_prints_effective_config_with_secrets_masked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(REPO / "etc" / "old-vcycle.conf.example")]) == 0
    out, err = capsys.readouterr()
    assert "[space vcycle01.example.com]" in out
    assert "password_base64 = ********" in out
    assert "UEFTU3dvcmQ=" not in out + err
    assert "processors_limit = 1" in out
    assert "warning:" in err and "tenancy_name: is deprecated; use project_name" in err


def test_invalid_file_exits_2_listing_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[settings]\ncycle_secnds = 1\n[space sp]\napi = fake\nprocessors_limit = x\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    _, err = capsys.readouterr()
    assert "cycle_secnds: unknown key" in err
    assert "processors_limit: 'x' is not a whole number" in err
    assert "a space needs at least one" in err
    assert "Traceback" not in err


def test_secret_user_data_options_and_url_passwords_are_masked(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text("[settings]\nstate_url = postgresql+psycopg://vc:hunter2@db/vcycle\n[space sp]\napi = fake\n"
                    "[machinetype sp mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\n"
                    "user_data_option_pool_password = hunter2\n")
    assert main(["check-config", "--config", str(conf)]) == 0
    out, _ = capsys.readouterr()
    assert "hunter2" not in out
    assert "user_data_option_pool_password = ********" in out


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("postgresql://u:p4ss@h:5432/db") == "postgresql://u:********@h:5432/db"
    assert mask_url("sqlite:////var/lib/vcycle/state.db") == "sqlite:////var/lib/vcycle/state.db"


def test_console_script_runs_without_traceback_on_missing_file() -> None:
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "check-config", "--config", "/no/such/file"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "/no/such/file: no such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_shipped_systemd_unit_and_cron_line_run_real_commands() -> None:
    import shlex

    from vcycle.cli.main import build_parser

    unit = (REPO / "etc" / "systemd" / "vcycle.service").read_text()
    commands = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(("ExecStart=", "ExecStartPre="))]
    cron = [line for line in (REPO / "etc" / "cron.d" / "vcycle").read_text().splitlines()
            if line and not line.startswith("#")]
    commands += [line.split(None, 6)[6].split(">>")[0] for line in cron]
    assert len(commands) == 3
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "/usr/bin/vcycle"
        build_parser().parse_args(argv[1:])  # exits with status 2 if the command line were wrong

"""What the operator's commands print: grouped, with headers, every machinetype, unconfirmed creates, and no
traceback when the reader goes away. Run as a site runs them: ``python -m vcycle.cli`` on a fake cloud kept in
a file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

CONF = """[settings]
state_url = sqlite:///{tmp}/state.db
state_dir = {tmp}
manager_name = h
max_create_fraction = 1

[space sp]
api = fake
state_file = {tmp}/cloud.json
processors_limit = 40

[machinetype sp a]
user_data = pilot-container
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0

[machinetype sp b]
user_data = pilot-container
target_share = 2
backoff_seconds = 0
fizzle_seconds = 0

[machinetype sp spare]
user_data = pilot-container
target_share = 0
backoff_seconds = 0
fizzle_seconds = 0
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "vcycle.conf"
    path.write_text(CONF.format(tmp=tmp_path))
    return path


def vcycle(conf: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", *argv, "--config", str(conf)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_plan_on_a_new_site_groups_per_machinetype_and_shows_each_with_machines(conf: Path) -> None:
    done = vcycle(conf, "plan")
    assert done.returncode == 0 and "no state store" in done.stderr and "shown as empty" in done.stderr
    creates = [line for line in done.stdout.splitlines() if line.strip().startswith("create")]
    assert [line.split(":")[0].strip() for line in creates] == ["create 27 x b", "create 13 x a"]  # 2:1 shares
    each = vcycle(conf, "plan", "--machines").stdout
    assert each.count("  create b:") == 27 and each.count("  create a:") == 13
    assert not (conf.parent / "state.db").exists()  # a dry run makes no store


def test_ties_go_to_the_larger_share_not_the_alphabet(conf: Path) -> None:
    first = next(line for line in vcycle(conf, "plan", "--machines").stdout.splitlines() if "create" in line)
    assert first.strip().startswith("create b:")  # a and b both at 0: b has target_share 2


def test_plan_into_a_closed_pipe_is_quiet(conf: Path) -> None:
    done = subprocess.run(f"{sys.executable} -m vcycle.cli plan --machines --config {conf} | head -1; "
                          "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.stdout == "space sp:\n"
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_status_lists_every_machinetype_and_the_creates_not_confirmed(conf: Path) -> None:
    assert vcycle(conf, "cycle").returncode == 0
    state = json.loads((conf.parent / "cloud.json").read_text())
    lost = state["machines"][:3]  # three creates the cloud never made: their intents remain
    state["machines"] = state["machines"][3:]
    (conf.parent / "cloud.json").write_text(json.dumps(state))
    import sqlite3

    with sqlite3.connect(conf.parent / "state.db") as db:
        for machine in lost:
            db.execute("update machines set state = 'requested', cloud_id = null where name = ?",
                       (machine["name"],))
        db.execute("update spaces set version = version + 1")
    done = vcycle(conf, "status")
    assert done.returncode == 0
    rows = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("│")}
    assert {"a", "b", "spare"} <= rows  # spare has no machines, and is listed all the same
    assert re.search(r"3 create\(s\) not yet confirmed by the cloud, the oldest requested at \S+", done.stdout)
    assert "create(s) not yet confirmed" in vcycle(conf, "plan").stdout
    as_json = json.loads(vcycle(conf, "status", "--json").stdout)
    assert as_json["spaces"]["sp"]["unconfirmed"]["creates"] == 3


def test_machines_list_has_a_header_and_times_to_the_second(conf: Path) -> None:
    vcycle(conf, "cycle")
    lines = vcycle(conf, "machines", "list").stdout.splitlines()
    assert lines[0].split("\t") == ["SPACE", "MACHINETYPE", "NAME", "STATE", "SINCE", "REASON"]
    assert len(lines) == 41
    since = lines[1].split("\t")[4]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", since), since


def test_twenty_identical_errors_are_one_line_with_a_count() -> None:
    from vcycle.cli.show import grouped_errors
    from vcycle.core.model import ReportError

    message = "create refused (quota): RunInstances: VcpuLimitExceeded: " + "You have requested more vCPUs " * 5
    errors = [ReportError("create_refused_quota", "sp", message, "a", f"vcycle-a-{i:010d}").as_dict()
              for i in range(20)]
    errors.append(ReportError("store", "sp", "outcomes not recorded").as_dict())
    lines = grouped_errors(errors)
    assert lines == [f"machinetype=a: {message} (x20: vcycle-a-0000000000, vcycle-a-0000000001, "
                     "vcycle-a-0000000002, ...)", "outcomes not recorded"]
    assert grouped_errors(errors[:1]) == [f"machinetype=a machine=vcycle-a-0000000000: {message}"]


def test_verbose_logs_of_a_first_cycle_carry_no_alembic_lines(conf: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "-v", "cycle", "--config", str(conf)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "vcycle.loop.cycle" in done.stderr  # -v logs, and the store was migrated
    assert "alembic" not in done.stderr.lower(), done.stderr


def test_a_postgresql_url_without_its_driver_is_a_clear_error(conf: Path, tmp_path: Path) -> None:
    """The driver of a valid scheme missing from this installation: said, with how to install it."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "psycopg.py").write_text("raise ImportError('no psycopg here')\n")
    conf.write_text(conf.read_text().replace(f"sqlite:///{tmp_path}/state.db",
                                             "postgresql+psycopg://vc:hunter2@127.0.0.1:1/vcycle"))
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "status", "--config", str(conf)], capture_output=True,
                          text=True, timeout=120, check=False, env={**__import__("os").environ,
                                                                    "PYTHONPATH": str(shadow)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no driver for 'postgresql+psycopg' is installed" in done.stderr and "hunter2" not in done.stderr


@pytest.mark.parametrize("argv", [("plan", "--space", "nosuch"), ("cycle", "--space", "nosuch"),
                                  ("drain", "nosuch"), ("render", "sp", "nosuch")])
def test_a_space_or_machinetype_not_configured_exits_2_as_a_configuration_error(conf: Path,
                                                                                 argv: tuple[str, ...]) -> None:
    done = vcycle(conf, *argv)
    assert done.returncode == 2 and "nosuch" in done.stderr and done.stdout == ""


def test_a_machine_the_store_does_not_hold_exits_1(conf: Path) -> None:
    vcycle(conf, "cycle")
    for argv in (("machines", "history", "nosuch"), ("machines", "delete", "nosuch")):
        done = vcycle(conf, *argv)
        assert done.returncode == 1 and "no machine named nosuch" in done.stderr

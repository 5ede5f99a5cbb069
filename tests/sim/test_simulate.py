"""``vcycle simulate``: the real cycle on simulated clouds and a simulated batch system.

Checked against cases worked out by hand (fixed boot times, known arrivals: exact waits, core-hours and cost),
for reproducibility (the same seed, the same bytes), on the trace formats real systems export, and for the
errors a user meets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from vctest import load_text

from vcycle.errors import ConfigError
from vcycle.sim import clouds, report, run, trace
from vcycle.sim.trace import Job, TraceError

ROOT = Path(__file__).resolve().parents[2]

SITE = """
[settings]
manager_name = sim
state_dir = /tmp
cycle_seconds = 60
max_create_fraction = 1

[demand queue]
type = file
path = /nonexistent.json

[space one]
api = local
processors_limit = 8

[machinetype one pilot]
demand = queue
user_data = pilot-container
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
max_wallclock_seconds = 86400
price_per_hour = 0.5
"""


def spec(tmp_path: Path, text: str, spaces: list[str]) -> dict[str, clouds.CloudSpec]:
    path = tmp_path / "clouds.ini"
    path.write_text(text)
    return clouds.load(str(path), spaces)


def test_a_hand_worked_case_gives_exact_waits_core_hours_and_cost(tmp_path: Path) -> None:
    """Boot 120 s, one cycle a minute. Two 600 s jobs at 0: two machines made at 0 run them from 120 (waits
    120). A 1200 s job at 300 finds both busy: its machine, made at 300, runs it from 420 (wait 120). Each pilot
    ends with its last job (720, 720, 1620) and its machine is deleted in that cycle: 2400 core-seconds run,
    2400 busy; 720 + 720 + 1320 machine-seconds at 0.5 an hour cost 0.3833."""
    config = load_text(SITE)
    jobs = [Job("a", 0, 1, 1000, 600, "pilot"), Job("b", 0, 1, 1000, 600, "pilot"),
            Job("c", 300, 1, 1000, 1200, "pilot")]
    found = run.simulate(config, spec(tmp_path, "[defaults]\nboot_seconds = 120\nprices = *=0.5\n", ["one"]), jobs)
    outcomes = found.batch.outcomes
    assert {j: (o.started, o.ended) for j, o in outcomes.items()} == {
        "a": (120, 720), "b": (120, 720), "c": (420, 1620)}
    summary = report.summary(found)
    assert summary["machinetypes"]["pilot"]["wait_seconds"] == {"p50": 120, "p90": 120, "p99": 120, "max": 120,
                                                               "mean": 120}
    assert summary["core_hours"] == {"used": round(2400 / 3600, 6), "busy": round(2400 / 3600, 6),
                                     "efficiency": 1.0}
    assert summary["cost"] == {"one": round((720 + 720 + 1320) / 3600 * 0.5, 6)}
    assert summary["machines"] == {"one": {"made": 3, "failed_booting": 0, "interrupted": 0}}


def test_the_planner_s_limits_shape_the_waits(tmp_path: Path) -> None:
    """The space holds 8 processors: 10 one-hour jobs at 0 run 8 at once from 60 (boot 60), and the last two from
    3660 on two of the pilots their first jobs freed (a pilot takes the next job while jobs wait)."""
    config = load_text(SITE)
    jobs = [Job(f"j{n}", 0, 1, 1000, 3600, "pilot") for n in range(10)]
    found = run.simulate(config, spec(tmp_path, "[defaults]\nboot_seconds = 60\n", ["one"]), jobs)
    starts = sorted(o.started for o in found.batch.outcomes.values() if o.started is not None)
    assert starts == [60] * 8 + [3660] * 2
    summary = report.summary(found)
    assert summary["limit_hits"]["space_limit"] >= 1


def test_the_same_seed_gives_the_same_report_byte_for_byte(tmp_path: Path) -> None:
    config = load_text(SITE)
    chance = spec(tmp_path, "[defaults]\nboot_seconds = uniform 30 300\nfailure_rate = 0.2\n"
                            "interruption_rate_per_hour = 0.3\nprices = *=0.1\n", ["one"])
    jobs = trace.read(ROOT / "etc" / "simulate" / "trace.csv")[:60]
    first = report.to_json(report.summary(run.simulate(config, chance, jobs, seed=5, until=8 * 3600)))
    again = report.to_json(report.summary(run.simulate(config, chance, jobs, seed=5, until=8 * 3600)))
    other = report.to_json(report.summary(run.simulate(config, chance, jobs, seed=6, until=8 * 3600)))
    assert first == again
    assert first != other  # the seed is what decides: boots, failures and interruptions follow it
    assert report.page([json.loads(first)]) == report.page([json.loads(again)])


def test_a_run_of_known_length_samples_only_the_steps_its_report_plots(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``until`` given, the run samples every n-th step itself (at most MAX_SAMPLES, here 10 of 481): the
    report is byte for byte the one of a run that sampled every step and left the report to thin them out."""
    config = load_text(SITE)
    chance = spec(tmp_path, "[defaults]\nboot_seconds = uniform 30 300\nfailure_rate = 0.2\n"
                            "interruption_rate_per_hour = 0.3\nprices = *=0.1\n", ["one"])
    jobs = trace.read(ROOT / "etc" / "simulate" / "trace.csv")[:60]
    monkeypatch.setattr(report, "MAX_SAMPLES", 10)
    monkeypatch.setattr(run, "MAX_SAMPLES", 10)
    thinned = run.simulate(config, chance, jobs, seed=5, until=8 * 3600)
    monkeypatch.setattr(run, "MAX_SAMPLES", 10**9)  # every step sampled, as a run of unknown length does
    every = run.simulate(config, chance, jobs, seed=5, until=8 * 3600)
    assert (thinned.steps, len(thinned.samples), len(every.samples)) == (481, 10, 481)
    assert report.to_json(report.summary(thinned)) == report.to_json(report.summary(every))


def test_condor_history_and_sacct_traces_read_as_jobs(tmp_path: Path) -> None:
    condor = trace.read(ROOT / "etc" / "simulate" / "condor-history.json")
    assert condor[0].arrival == 0 and all(j.cores >= 1 and j.duration > 0 for j in condor)
    sacct = tmp_path / "sacct.json"
    sacct.write_text(json.dumps({"meta": {}, "jobs": [
        {"job_id": 11, "partition": "pilot", "time": {"submission": 1700000100, "elapsed": 300},
         "required": {"CPUs": 2, "memory": 4000}},
        {"job_id": 10, "partition": "other", "time": {"submission": 1700000000, "elapsed": 60},
         "required": {"CPUs": 1, "memory": {"set": True, "number": 1000}}}]}))
    assert trace.read(sacct) == [Job("10", 0, 1, 1000, 60, "other"), Job("11", 100, 2, 4000, 300, "pilot")]


@pytest.mark.parametrize(("name", "text", "words"), [
    ("t.csv", "id,arrival,cores,memory_mb,duration\nj1,soon,1,1,1\n", "arrival = 'soon' is not a number or a time"),
    ("t.csv", "id,arrival,cores,memory_mb,duration\nj1,0,0,1,1\n", "cores must be 1 or more"),
    ("t.json", "[{\"id\": \"a\", \"arrival\": 0, \"duration\": 1}, {\"id\": \"a\", \"arrival\": 1, "
               "\"duration\": 1}]", "job a appears twice"),
    ("t.json", "{\"not\": \"a trace\"}", "a trace is a list of jobs"),
    ("t.json", "[]", "the trace has no jobs"),
])
def test_a_bad_trace_is_refused_naming_the_file_and_the_job(tmp_path: Path, name: str, text: str,
                                                           words: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        trace.read(path)
    assert str(path) in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize(("text", "section", "key", "words"), [
    ("[defaults]\nboot_seconds = soon\n", "defaults", "boot_seconds", "is not seconds"),
    ("[space one]\nfailure_rate = 2\n", "space one", "failure_rate", "not a share between 0 and 1"),
    ("[space one]\nprices = m5=cheap\n", "space one", "prices", "is not a price"),
    ("[space one]\ncolour = blue\n", "space one", "colour", "unknown key"),
    ("[space two]\nboot_seconds = 1\n", "space two", "", "not [defaults] or [space NAME] of a configured space"),
])
def test_a_bad_clouds_file_is_refused_naming_file_section_and_key(tmp_path: Path, text: str, section: str,
                                                                  key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        spec(tmp_path, text, ["one"])
    assert any(p.file.endswith("clouds.ini") and p.section == section and p.key == key and words in p.message
               for p in caught.value.problems), caught.value.problems


def test_the_command_writes_json_html_and_png_and_compares_two_configurations(tmp_path: Path) -> None:
    site = tmp_path / "site.conf"
    site.write_text(SITE)
    other = tmp_path / "other.conf"
    other.write_text(SITE.replace("processors_limit = 8", "processors_limit = 2"))
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "simulate", "--config", str(site), "--trace",
                           str(ROOT / "etc" / "simulate" / "trace.csv"), "--until", "6h", "--compare", str(other),
                           "--report", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{site}: 6.0 simulated hours" in done.stdout and f"{other}: 6.0 simulated hours" in done.stdout
    both = json.loads((out / "report.json").read_text())["compare"]
    waits = [b["machinetypes"]["pilot"]["wait_seconds"]["p90"] for b in both]
    assert waits[0] < waits[1]  # two processors make the jobs wait longer than eight
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 6 and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert (out / "main.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_says_what_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    site = tmp_path / "site.conf"
    site.write_text(SITE)
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "simulate", "--config", str(site), "--trace",
                           str(tmp_path / "missing.csv")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "missing.csv: cannot read the trace" in done.stderr
    assert "Traceback" not in done.stderr
    bad = tmp_path / "clouds.ini"
    bad.write_text("[defaults]\nfailure_rate = lots\n")
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "simulate", "--config", str(site), "--trace",
                           str(ROOT / "etc" / "simulate" / "trace.csv"), "--clouds", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "[defaults] failure_rate" in done.stderr and "Traceback" not in done.stderr


def test_a_simulated_cycle_decides_as_a_real_cycle_once_on_the_same_snapshot(tmp_path: Path) -> None:
    """An empty space, seven idle jobs: ``vcycle cycle --once`` (the FakeConnector in a state file, the file
    demand source) and the simulation's first cycle make the same decisions, reasons and numbers included."""
    demand = tmp_path / "demand.json"
    demand.write_text(json.dumps({"one": {"pilot": {"idle_jobs": 7, "running_jobs": 0}}}))
    text = (SITE.replace("api = local", f"api = fake\nstate_file = {tmp_path}/cloud.json")
            .replace("max_create_fraction = 1", "max_create_fraction = 0.5")
            .replace("path = /nonexistent.json", f"path = {demand}")
            .replace("state_dir = /tmp", f"state_dir = {tmp_path}\nstate_url = sqlite:///{tmp_path}/state.db")
            .replace("price_per_hour = 0.5", "price_per_hour = 0.5\njobs_per_machine = 1"))
    site = tmp_path / "site.conf"
    site.write_text(text)
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "cycle", "--once", "--config", str(site)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    real = json.loads(subprocess.run([sys.executable, "-m", "vcycle.cli", "status", "--json", "--config",
                                      str(site)], capture_output=True, text=True, timeout=60,
                                     check=True).stdout)["spaces"]["one"]["last_cycle"]["decisions"]
    config = load_text(text)
    jobs = [Job(f"j{n}", 0, 1, 1000, 600, "pilot") for n in range(7)]
    simulated = run.simulate(config, clouds.load(None, ["one"]), jobs, until=0).first["one"]
    assert [(d["action"], d["machinetype"], d["rule"], d["reason"]) for d in real] == \
        [(d.action.value, d.machinetype, d.rule, d.reason) for d in simulated]
    assert sum(d["action"] == "create" for d in real) == 4  # max_create_fraction 0.5 of 8


def test_a_store_s_recorded_demand_replays_as_jobs_against_another_configuration(tmp_path: Path) -> None:
    """Three cycles recorded idle 3, 5, 2 and running 0, 0, 3 jobs: 3 jobs at 0, 2 at 60 (the rise), none at 120
    (the fall of 3 idle is the rise of 3 running); each lasts the mean running (1) over the arrivals per second
    (5 in 120 s), at least one cycle: 60 s."""
    from datetime import timedelta

    from vcycle.core.model import CycleReport
    from vcycle.sim import replay
    from vcycle.store import Store

    url = f"sqlite:///{tmp_path}/recorded.db"
    store = Store.open(url)
    store.write("one", store.load("one").version, [])  # the space as a real cycle leaves it known
    t0 = run.START
    for n, (idle, running) in enumerate([(3, 0), (5, 0), (2, 3)]):
        at = t0 + timedelta(seconds=60 * n)
        store.add_reports([CycleReport("one", at, at, ok=True, series={"pilot": {"idle": idle,
                                                                                 "running_jobs": running}})])
    store.close()
    found = replay.jobs(url, t0)
    assert [(j.arrival, j.duration, j.machinetype) for j in found] == [(0, 60, "pilot")] * 3 + [(60, 60, "pilot")] * 2
    site = tmp_path / "site.conf"
    site.write_text(SITE)
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "simulate", "--config", str(site), "--from-store",
                           url, "--since", t0.date().isoformat()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pilot: 5 jobs, 5 finished" in done.stdout
    empty = subprocess.run([sys.executable, "-m", "vcycle.cli", "simulate", "--config", str(site), "--from-store",
                            url, "--since", "2030-01-01"], capture_output=True, text=True, timeout=120)
    assert empty.returncode != 0 and "recorded no demand since 2030-01-01" in empty.stderr
    assert "Traceback" not in empty.stderr

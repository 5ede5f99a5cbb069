"""`vcycle check-config`: prints the effective configuration, secrets masked; exit 0 or 2.

It refuses what ``cycle`` and ``daemon`` would refuse later: the endpoint's
certificate and key, templates that do not render for a sample machine, and,
with ``--online``, flavors and images the cloud (moto's server here) does not
have.
"""

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
                    "[machinetype sp mt]\nuser_data = pilot-container\nbackoff_seconds = 1\nfizzle_seconds = 1\n"
                    "user_data_option_pool_password = hunter2\n")
    assert main(["check-config", "--config", str(conf)]) == 0
    out, _ = capsys.readouterr()
    assert "hunter2" not in out
    assert "user_data_option_pool_password = ********" in out
    assert "state_url = postgresql+psycopg://vc:********@db/vcycle" in out  # the URL, but not its password


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


BASE = "[settings]\nmanager_name = m\nstate_dir = {tmp}\n{settings}[space sp]\napi = fake\n[machinetype sp mt]\n" \
       "backoff_seconds = 1\nfizzle_seconds = 1\n{mt}"


def check(tmp_path: Path, mt: str = "user_data = pilot-container\n", settings: str = "",
          *extra: str) -> tuple[int, str, str]:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(BASE.format(tmp=tmp_path, settings=settings, mt=mt))
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "check-config", "--config", str(conf), *extra],
                          capture_output=True, text=True, check=False)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout, done.stderr


def test_quiet_prints_nothing_for_a_good_file(tmp_path: Path) -> None:
    assert check(tmp_path, "user_data = pilot-container\n", "", "--quiet") == (0, "", "")


@pytest.mark.parametrize(("mt", "words"), [
    ("user_data = bad.j2\n", "does not render for a sample machine: "),
    ("user_data = undefined.j2\n", "'nothing_like_this' is undefined"),
    ("user_data = htcondor-startd\n", "'dict object' has no attribute 'condor_host'"),
    ("user_data = missing-file\n", "no such file"),
])
def test_templates_that_do_not_render_are_errors(tmp_path: Path, mt: str, words: str) -> None:
    files = tmp_path / "spaces" / "sp" / "machinetypes" / "mt" / "files"
    files.mkdir(parents=True)
    (files / "bad.j2").write_text("#!/bin/sh\n{% if %}\n")
    (files / "undefined.j2").write_text("#!/bin/sh\necho {{ nothing_like_this }}\n")
    (files / "old").write_text("#!/bin/sh\nexport CVMFS_HTTP_PROXY=##user_data_option_cvmfs_proxy##\n")
    code, _, err = check(tmp_path, mt)
    assert code == 2, err
    assert "[machinetype sp mt] user_data: does not render for a sample machine" in err and words in err, err


def test_an_old_style_option_no_key_sets_is_warned_about_and_passes_when_set(tmp_path: Path) -> None:
    """The old vcycle removes a ``##user_data_option_X##`` nothing sets (so does vcycle): worth a warning."""
    files = tmp_path / "spaces" / "sp" / "machinetypes" / "mt" / "files"
    files.mkdir(parents=True)
    (files / "old").write_text("#!/bin/sh\nexport CVMFS_HTTP_PROXY=##user_data_option_cvmfs_proxy##\n")
    code, _, err = check(tmp_path, "user_data = old\n", "", "--quiet")
    assert code == 0 and "[machinetype sp mt] user_data: old uses ##user_data_option_cvmfs_proxy## but no " \
                         "user_data_option_cvmfs_proxy is set: the machines get it empty" in err, err
    assert check(tmp_path, "user_data = old\nuser_data_option_cvmfs_proxy = http://squid:3128\n", "",
                 "--quiet")[0] == 0


def test_https_listen_without_usable_certificate_and_key_is_an_error(tmp_path: Path) -> None:
    """The systemd unit's ExecStartPre (check-config) must fail where the daemon's ExecStart would."""
    code, _, err = check(tmp_path, settings="https_listen = 127.0.0.1:8443\n")
    assert code == 2 and "[settings] https_cert: needed when https_listen is set" in err
    code, _, err = check(tmp_path, settings=f"https_listen = 127.0.0.1:8443\nhttps_cert = {tmp_path}/no.pem\n"
                                            f"https_key = {tmp_path}/no.key\n")
    assert code == 2 and f"https_cert: {tmp_path}/no.pem does not exist" in err


def test_a_certificate_and_a_key_that_do_not_match_are_an_error(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    signing, other = key(), key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcycle.example.org")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(signing.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(signing, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for name_, k in (("good.key", signing), ("other.key", other)):
        (tmp_path / name_).write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    https = f"https_listen = 127.0.0.1:8443\nhttps_cert = {tmp_path}/cert.pem\nhttps_key = {tmp_path}/"
    assert check(tmp_path, "user_data = pilot-container\n", https + "good.key\n", "--quiet")[0] == 0
    code, _, err = check(tmp_path, "user_data = pilot-container\n", https + "other.key\n")
    assert code == 2 and "cannot be used" in err and "KEY_VALUES_MISMATCH" in err.upper().replace(" ", "_"), err


def test_an_unknown_state_url_scheme_is_an_error_naming_the_key(tmp_path: Path) -> None:
    code, _, err = check(tmp_path, settings="state_url = mysql://db/vcycle\n")
    assert code == 2 and "[settings] state_url: 'mysql' is not a database vcycle can keep its state in" in err


def test_syntax_only_skips_the_files_of_this_host(tmp_path: Path) -> None:
    assert check(tmp_path, "user_data = missing-file\n", "", "--syntax-only", "--quiet") == (0, "", "")


def ec2_conf(tmp_path: Path, moto_url: str, image: str, flavor: str) -> Path:
    conf = tmp_path / "ec2.conf"
    conf.write_text(f"[settings]\nmanager_name = m\nstate_dir = {tmp_path}\n[space e]\napi = ec2\nurl = {moto_url}\n"
                    "region = us-east-1\naccess_key = testing\nsecret_key = testing\n[machinetype e mt]\n"
                    "user_data = pilot-container\nbackoff_seconds = 1\nfizzle_seconds = 1\nmin_processors = 2\n"
                    f"root_image = image:{image}\nflavor_names = {flavor}\n")
    return conf


def test_online_finds_instance_types_and_images_the_region_lacks(tmp_path: Path, moto_url: str,
                                                                 moto_ami: str) -> None:
    import boto3

    client = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    before = client.describe_instances()["Reservations"]

    def online(image: str, flavor: str) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "vcycle.cli", "check-config", "--online", "--quiet", "--config",
                               str(ec2_conf(tmp_path, moto_url, image, flavor))],
                              capture_output=True, text=True, check=False, timeout=120)
        assert "Traceback" not in done.stderr
        return done.returncode, done.stderr

    assert online(moto_ami, "t3.micro") == (0, "")
    code, err = online(moto_ami, "x9.superlarge")
    assert code == 2 and "[machinetype e mt] flavor_names: no flavor has 2.. processors (vcpus: " \
                         "x9.superlarge=not in cloud)" in err, err
    code, err = online("ami-00000000", "t3.micro")
    assert code == 2 and "[machinetype e mt] root_image: DescribeImages ami-00000000: InvalidAMIID.NotFound" in err
    assert client.describe_instances()["Reservations"] == before  # nothing was changed


def test_online_names_a_cloud_that_refuses_the_credentials(tmp_path: Path) -> None:
    conf = ec2_conf(tmp_path, "http://127.0.0.1:9", "ami-1", "t3.micro")
    text = conf.read_text().replace("[space e]\n", "[space e]\napi_timeout_seconds = 2\n")
    conf.write_text(text)
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "check-config", "--online", "--quiet", "--config",
                           str(conf)], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 2 and "[space e]: the ec2 cloud cannot be used: DescribeInstances" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_apel_queue_that_cannot_be_made_is_an_error_and_unsent_spaces_a_warning(tmp_path: Path) -> None:
    """The systemd unit's ExecStartPre says at once what the cycles would only log: records kept nowhere."""
    (tmp_path / "a-file").write_text("")
    code, _, err = check(tmp_path, settings=f"apel_outgoing_dir = {tmp_path}/a-file/outgoing\n")
    assert code == 2 and f"[settings] apel_outgoing_dir: {tmp_path}/a-file/outgoing cannot be written" in err, err
    assert "[space sp] gocdb_sitename: not set: its APEL records are archived but not sent" in err
    code, _, err = check(tmp_path, "user_data = pilot-container\n", f"apel_outgoing_dir = {tmp_path}/spool/outgoing\n",
                         "--quiet")
    assert code == 0 and "gocdb_sitename: not set" in err

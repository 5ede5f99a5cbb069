"""Configuration: old files load unchanged, bad input is reported all at once, located."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from vctest import config_text, load_text

from vcycle.config import load_config
from vcycle.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    return [str(p) for p in caught.value.problems]


def test_minimal_space_loads_with_old_defaults() -> None:
    config = load_text(config_text())
    mt = config.spaces["sp"].machinetypes["mt"]
    assert mt.max_wallclock_seconds == 86400
    assert mt.mb_per_processor == 2048
    assert mt.disk_gb_per_processor == 40
    assert mt.min_processors == 1 and mt.max_processors is None
    assert mt.heartbeat_seconds == 0
    assert mt.cvmfs_proxy_machinetype is None
    assert config.spaces["sp"].https_port == 443
    assert config.spaces["sp"].cleanup_hours == 72
    settings = config.settings
    assert (settings.cycle_seconds, settings.max_create_fraction, settings.starting_timeout_seconds) == (60, 0.1, None)
    assert (mt.launch_timeout_seconds, mt.register_timeout_seconds, mt.first_job_timeout_seconds) == (None, 900, 1800)
    assert settings.state_url == "sqlite:////var/lib/vcycle/state.db"


def test_manager_name_defaults_to_host_name(tmp_path: Path) -> None:
    path = tmp_path / "a.conf"
    path.write_text(config_text().replace("manager_name = mgr\n", ""))
    assert load_config([path], hostname="factory01").settings.manager_name == "factory01"
    assert load_config([path], hostname="factory01").spaces["sp"].https_host == "factory01"


def test_every_file_in_etc_loads() -> None:
    files = [f for f in glob.glob(str(REPO / "etc" / "**" / "*"), recursive=True)
             if f.endswith((".conf", ".example")) and os.path.isfile(f)
             and os.path.basename(os.path.dirname(f)) not in ("sysusers.d", "tmpfiles.d")]  # systemd's, not ours
    assert len(files) >= 4
    for path in files:
        config = load_config([path], hostname="h")
        assert config.spaces, path


def test_old_vcycle_example_loads_with_deprecation_warnings() -> None:
    config = load_config([REPO / "etc" / "old-vcycle.conf.example"], hostname="h")
    space = config.spaces["vcycle01.example.com"]
    mt = space.machinetypes["example"]
    assert space.processors_limit == 1  # from max_processors
    assert space.connector.project_name == "Vcycle 01"  # from tenancy_name
    assert mt.flavor_names == ("small",)  # from flavor_name
    assert mt.min_processors == 1  # from processors_per_machine
    assert mt.https_x509dn == "/DC=com/DC=example/DC=example-vm"  # from x509dn
    warned = {(w.section, w.key) for w in config.warnings}
    assert ("space vcycle01.example.com", "max_processors") in warned
    assert ("machinetype vcycle01.example.com example", "x509dn") in warned
    assert ("machinetype vcycle01.example.com example", "log_joboutputs") in warned
    assert all(w.file.endswith("old-vcycle.conf.example") for w in config.warnings)


def test_new_name_wins_over_deprecated_one_with_a_warning() -> None:
    config = load_text(config_text(machinetypes={"mt": {"flavor_names": "big", "flavor_name": "small"}}))
    assert config.spaces["sp"].machinetypes["mt"].flavor_names == ("big",)
    assert any("ignored, as flavor_names is also given" in w.message for w in config.warnings)


def test_space_defaults_flow_into_machinetypes() -> None:
    config = load_text(config_text(space={"flavor_names": "a b", "volume_gb_per_processor": 5},
                                   machinetypes={"one": {}, "two": {"flavor_names": "c"}}))
    mts = config.spaces["sp"].machinetypes
    assert mts["one"].flavor_names == ("a", "b") and mts["two"].flavor_names == ("c",)
    assert mts["one"].volume_gb_per_processor == 5


def test_max_starting_processors_defaults_to_processors_limit() -> None:
    config = load_text(config_text(machinetypes={"mt": {"processors_limit": 12}}))
    assert config.spaces["sp"].machinetypes["mt"].max_starting_processors == 12


def test_user_data_options_and_files_are_collected() -> None:
    config = load_text(config_text(machinetypes={"mt": {
        "user_data_option_cvmfs_proxy": "http://squid:3128", "user_data_file_hostcert": "hostcert.pem"}}))
    mt = config.spaces["sp"].machinetypes["mt"]
    assert mt.user_data_options == {"user_data_option_cvmfs_proxy": "http://squid:3128"}
    assert mt.user_data_files == {"user_data_file_hostcert": "hostcert.pem"}


def test_unknown_user_data_key_warns_like_the_old_vcycle_ignored_it() -> None:
    # The Belle II configuration of seed 004 carries such keys.
    config = load_text(config_text(machinetypes={"mt": {"user_data_machine_hostname": "vm.example.org"}}))
    assert any(w.key == "user_data_machine_hostname" for w in config.warnings)


def test_all_errors_are_reported_at_once_with_file_section_and_key() -> None:
    text = config_text(settings={"cycle_secnds": 3}, space={"processors_limit": "lots"},
                       machinetypes={"mt": {"flavour_names": "a", "target_share": -1, "min_processors": 4,
                                            "max_processors": 2, "demand": "nowhere"}})
    found = problems_of(text)
    expected = [
        "[settings] cycle_secnds: unknown key (did you mean cycle_seconds?)",
        "[space sp] processors_limit: 'lots' is not a whole number",
        "[machinetype sp mt] flavour_names: unknown key (did you mean flavor_names?)",
        "[machinetype sp mt] target_share: -1 is less than the smallest allowed, 0",
        "[machinetype sp mt] max_processors: max_processors 2 is less than min_processors 4",
        "[machinetype sp mt] demand: there is no [demand nowhere] section",
    ]
    for fragment in expected:
        assert any(fragment in line for line in found), (fragment, found)
    assert all(line.startswith("/") and ".conf: [" in line for line in found)


def test_required_machinetype_keys_are_errors() -> None:
    text = "[space sp]\napi = fake\n[machinetype sp mt]\ntarget_share = 1\n"
    found = problems_of(text)
    for key in ("backoff_seconds", "fizzle_seconds", "user_data"):
        assert any(f"[machinetype sp mt] {key}: is required" in line for line in found)


@pytest.mark.parametrize(("text", "fragment"), [
    ("[space Bad_Name]\napi = fake\n", "name 'bad_name' may only contain a-z 0-9 . -"),
    ("[space sp]\napi = fake\n", "a space needs at least one [machinetype sp NAME]"),
    ("[space sp]\napi = openstak\n", "unknown api 'openstak'"),
    ("[space sp]\napi = openstak\n", "(did you mean openstack?)"),
    ("[space sp]\n", "[space sp] api: is required"),
    ("[thing x]\na = 1\n", "unknown section"),
    ("a = 1\n", "a key before any [section] header"),
    ("[space sp]\nthis line has no equals sign\n", "cannot parse line(s) 2"),
    ("[machinetype nospace mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\n",
     "there is no [space nospace] section"),
    ("[demand d]\ntype = dirac\n", "[demand d] matcher_url: DIRAC's Matcher is needed"),
    ("[demand d]\ntype = sitedirector\nrequest_timeout_seconds = 0\n", "request_timeout_seconds: 0 is less than"),
    ("[demand d]\ntype = htcondor\nmethod = telepathy\n", "is not one of auto, bindings, commands"),
    ("[demand d]\ntype = carrier-pigeon\n",
     "unknown demand type 'carrier-pigeon'; this vcycle knows command, dirac, file, htcondor, sitedirector"),
    ("[demand d]\ntype = htcondr\n", "(did you mean htcondor?)"),
    ("[settings]\nmax_create_fraction = 2\n", "2 is more than the largest allowed, 1"),
])
def test_bad_input_is_a_clear_error(text: str, fragment: str) -> None:
    found = problems_of(text)
    assert any(fragment in line for line in found), found


def test_connector_keys_are_validated_by_the_connectors_model() -> None:
    text = "[space os]\napi = openstack\nurl = https://k\nusername = u\npassword_base64 = !!\nzonez = a\n" \
           "[machinetype os mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\nspot = true\n"
    found = problems_of(text)
    assert any("password_base64: is not valid base64" in line for line in found)
    assert any("zonez: unknown key (did you mean zones?)" in line for line in found)
    assert any("[machinetype os mt] spot: unknown key" in line for line in found)  # an ec2 key


def test_openstack_credentials_must_be_complete() -> None:
    found = problems_of("[space os]\napi = openstack\nurl = https://k\ncred_id = abc\n"
                        "[machinetype os mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\n")
    assert any("[space os] cred_secret: is required with cred_id" in line for line in found)


def test_openstack_cloud_name_replaces_url_and_credentials() -> None:
    config = load_text("[space os]\napi = openstack\ncloud = mycloud\n"
                       "[machinetype os mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\n")
    assert config.spaces["os"].connector.cloud == "mycloud"


def test_ec2_old_keys_without_effect_warn() -> None:
    config = load_text("[space e]\napi = ec2\nurl = https://ec2\naccess_key = A\nsecret_key = B\nversion = 2010-08-31\n"
                       "[machinetype e mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\n"
                       "root_image = image:ami-1\nflavor_names = m5.large\n")
    assert any(w.key == "version" and "no effect" in w.message for w in config.warnings)


@pytest.mark.parametrize(("lines", "key", "words"), [
    ("flavor_names = m5.large\n", "root_image", "is required for EC2"),
    ("root_image = image:ami-1\n", "flavor_names", "EC2 would launch its default size"),
    ("root_image = image:ami-1\nflavor_names =\n", "flavor_names", "EC2 would launch its default size"),
])
def test_ec2_machinetype_without_image_or_instance_type_is_refused(lines: str, key: str, words: str) -> None:
    """Without them EC2 launches no image, or its default size whatever min_processors says: refused at load
    (so by check-config too), naming the key, before anything is created."""
    with pytest.raises(ConfigError) as caught:
        load_text("[space e]\napi = ec2\nurl = https://ec2\naccess_key = A\nsecret_key = B\n"
                  "[machinetype e mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\n" + lines)
    assert any(p.section == "machinetype e mt" and p.key == key and words in p.message
               for p in caught.value.problems), caught.value


def test_files_in_a_directory_are_read_sorted_and_later_values_win(tmp_path: Path) -> None:
    (tmp_path / "10-base.conf").write_text(config_text(limit=10))
    (tmp_path / "20-site.conf").write_text("[space sp]\nprocessors_limit = 20\n")
    (tmp_path / "ignored.txt").write_text("not ini at all")
    config = load_config([tmp_path], hostname="h")
    assert config.spaces["sp"].processors_limit == 20
    assert [os.path.basename(f) for f in config.files] == ["10-base.conf", "20-site.conf"]


def test_an_error_in_a_later_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "10-base.conf").write_text(config_text())
    (tmp_path / "20-site.conf").write_text("[machinetype sp mt]\nfizzle_seconds = soon\n")
    with pytest.raises(ConfigError) as caught:
        load_config([tmp_path], hostname="h")
    (problem,) = caught.value.problems
    assert problem.file.endswith("20-site.conf") and problem.key == "fizzle_seconds"


def test_shutdown_time_is_a_unix_time() -> None:
    config = load_text(config_text(space={"shutdown_time": 1800000000}))
    assert int(config.spaces["sp"].shutdown_time.timestamp()) == 1800000000  # type: ignore[union-attr]


def test_cvmfs_proxy_machinetype_must_exist_in_the_space() -> None:
    found = problems_of(config_text(machinetypes={"mt": {"cvmfs_proxy_machinetype": "squid:3128"}}))
    assert any("there is no machinetype 'squid' in space sp" in line for line in found)
    config = load_text(config_text(machinetypes={"mt": {"cvmfs_proxy_machinetype": "squid:3128"}, "squid": {}}))
    assert config.spaces["sp"].machinetypes["mt"].cvmfs_proxy_machinetype == ("squid", 3128)
    config = load_text(config_text(machinetypes={"mt": {"cvmfs_proxy_machinetype": "squid"}, "squid": {}}))
    assert config.spaces["sp"].machinetypes["mt"].cvmfs_proxy_machinetype == ("squid", 280)  # the old default port


def test_demand_sections_are_typed() -> None:
    extra = "[demand q]\ntype = file\npath = /x.json\n"
    config = load_text(config_text(machinetypes={"mt": {"demand": "q"}}, extra=extra))
    assert config.demands["q"].type == "file" and config.demands["q"].options.path == "/x.json"
    assert config.spaces["sp"].machinetypes["mt"].demand == "q"


def test_config_objects_are_frozen() -> None:
    config = load_text(config_text())
    with pytest.raises(AttributeError):
        config.settings.cycle_seconds = 1  # type: ignore[misc]


def test_a_demand_source_s_machinetype_key_needs_that_source() -> None:
    """htcondor_constraint belongs to the htcondor source's machinetypes: elsewhere it is an error saying so."""
    found = problems_of(config_text(machinetypes={"mt": {"htcondor_constraint": "true"}}))
    assert any("[machinetype sp mt] htcondor_constraint: is a key of machinetypes whose demand is a [demand NAME] "
               "section of type = htcondor (this one has no demand)" in line for line in found), found
    extra = "[demand pool]\ntype = htcondor\n"
    config = load_text(config_text(machinetypes={"mt": {"demand": "pool", "htcondor_constraint": "Owner == 1"}},
                                   extra=extra))
    assert config.spaces["sp"].machinetypes["mt"].source.htcondor_constraint == "Owner == 1"


def test_every_key_is_declared_once_with_a_type_a_default_and_a_line_of_doc() -> None:
    """The core sections' and every plugin's keys come from one declaration each: a parser and a doc line."""
    from vcycle import connectors, demand
    from vcycle.core.options import table
    from vcycle.core.sections import DemandConfig, MachinetypeConfig, Settings, SpaceConfig

    declared = [Settings, SpaceConfig, MachinetypeConfig, DemandConfig]
    for registry in (connectors.REGISTRY, demand.REGISTRY):
        for name in registry.names():
            plugin = registry.load(name)
            declared += [cls for cls in (getattr(plugin, a, None) for a in ("space", "machinetype", "section"))
                         if cls is not None]
    seen: dict[str, str] = {}
    for cls in declared:
        for name, option in table(cls).items():
            assert callable(option.parse) and option.doc.strip(), f"{cls.__name__}.{name}"
            where = seen.setdefault(name, cls.__name__)
            # one meaning per word: a name two sections share is the same kind of value in both
            assert where == cls.__name__ or name in SHARED, f"{name} is declared by {where} and {cls.__name__}"


SHARED = {"flavor_names", "volume_gb_per_processor", "processors_limit", "timeout_seconds", "poll_seconds",
          "request_timeout_seconds", "key_name", "url", "region", "min_idle_seconds", "method", "slurm_conf",
          "drain_reason", "cloud", "credential_warning_days", "zones", "spot", "max_disrupting", "budget_per_month"}


def test_a_registry_looks_for_its_entry_points_once_and_finds_a_third_party_plugin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Scanning the installed distributions' entry points costs milliseconds and a configuration asks for each
    machinetype: a registry looks once, and what it found (a plugin of another package) still loads."""
    from importlib.metadata import EntryPoint

    from vcycle import plugins
    from vcycle.demand.base import DemandPlugin

    looks: list[str] = []

    def found(group: str) -> list[EntryPoint]:
        looks.append(group)
        return [EntryPoint("elsewhere", "vcycle.demand.file:PLUGIN", group)]

    monkeypatch.setattr(plugins, "entry_points", found)
    registry = plugins.Registry(DemandPlugin, "vcycle.test_plugins", {"file": "vcycle.demand.file"})
    for _ in range(3):
        assert registry.names() == ["elsewhere", "file"]
    assert isinstance(registry.load("elsewhere"), DemandPlugin)
    with pytest.raises(KeyError):
        registry.load("nowhere")
    assert looks == ["vcycle.test_plugins"]

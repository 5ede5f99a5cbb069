"""Read vcycle's INI files into frozen, typed configuration objects.

Files are read as the original vcycle read them: every ``*.conf`` in
``/var/lib/vcycle/shared/vcycle.d`` and ``/etc/vcycle.d`` in sorted order,
then ``/etc/vcycle.conf``; sections of the same name merge and later values
win. Deprecated keys are renamed through one table and warned about; every
problem of the whole file set is collected and raised at once as a
ConfigError, each naming file, section and key.

This module reads files and looks up the host name; it does not log, touch
clouds or stores, or import any connector's SDK.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vcycle import sections, vacuum_pipe
from vcycle.errors import ConfigError, ConfigProblem
from vcycle.options import ApiOptions, Option, RawValue, did_you_mean, looks_secret, parse_section

DEFAULT_PATHS = ("/var/lib/vcycle/shared/vcycle.d", "/etc/vcycle.d", "/etc/vcycle.conf")

Raw = dict[str, RawValue]


@dataclass(frozen=True, slots=True)
class Settings:
    """The manager's own settings, from ``[settings]``; see sections.SETTINGS for each key."""

    state_url: str
    state_dir: str
    cycle_seconds: int
    max_create_fraction: float
    starting_timeout_seconds: int
    request_timeout_seconds: int
    deleting_timeout_seconds: int
    delete_retry_seconds: int
    manager_name: str
    space_workers: int
    create_workers: int
    space_processes: int
    https_listen: tuple[str, int] | None = None
    https_cert: str | None = None
    https_key: str | None = None
    https_client_ca: str | None = None
    operator_token: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    trusted_proxy_dn_header: str = "X-SSL-Client-S-DN"
    joboutputs_dir: str = ""
    joboutputs_max_file_bytes: int = 10 * 1024 * 1024
    joboutputs_max_machine_bytes: int = 100 * 1024 * 1024
    machine_requests_per_minute: int = 600
    heartbeat_flush_seconds: float = 1.0
    file: str = ""  # where [settings] is, for messages about its keys


@dataclass(frozen=True, slots=True)
class DemandConfig:
    """A ``[demand NAME]`` section: where a machinetype's demand comes from."""

    name: str
    type: str
    values: Mapping[str, Any]
    file: str


@dataclass(frozen=True, slots=True)
class MachinetypeConfig:
    """A ``[machinetype SPACE NAME]`` section, with space defaults applied."""

    space: str
    name: str
    file: str
    directory: str  # machinetype files: x509 proxies, user_data files
    user_data: str
    root_image: str | None
    flavor_names: tuple[str, ...]
    min_processors: int
    max_processors: int | None
    hs06_per_processor: float | None
    mb_per_processor: int
    disk_gb_per_processor: int
    volume_gb_per_processor: int
    target_share: float
    backoff_seconds: int
    fizzle_seconds: int
    processors_limit: int | None
    max_starting_processors: int | None
    max_wallclock_seconds: int
    heartbeat_file: str | None
    heartbeat_seconds: int
    cvmfs_proxy_machinetype: str | None
    cvmfs_proxy_port: int
    https_x509dn: str | None
    demand: str | None
    jobs_per_machine: int | None
    user_data_options: Mapping[str, str]  # full key -> value, e.g. user_data_option_cvmfs_proxy
    user_data_files: Mapping[str, str]  # full key -> path, e.g. user_data_file_hostcert
    values: Mapping[str, Any]  # every effective key, core and connector, for display
    secrets: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SpaceConfig:
    """A ``[space NAME]`` section and its machinetypes."""

    name: str
    api: str
    file: str
    processors_limit: int | None
    shutdown_time: datetime | None
    https_host: str
    https_port: int
    cleanup_hours: int
    machinetypes: Mapping[str, MachinetypeConfig]
    values: Mapping[str, Any]
    secrets: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, valid by construction."""

    settings: Settings
    spaces: Mapping[str, SpaceConfig]
    demands: Mapping[str, DemandConfig]
    files: tuple[str, ...]
    warnings: tuple[ConfigProblem, ...] = field(default=())

    def takes_pilots(self, mt: MachinetypeConfig) -> bool:
        """Whether ``mt``'s machines run the pilots DIRAC's SiteDirector submits (demand type sitedirector)."""
        demand = self.demands.get(mt.demand) if mt.demand is not None else None
        return demand is not None and demand.type == "sitedirector"


def expand_paths(
    paths: Sequence[str | os.PathLike[str]], problems: list[ConfigProblem], *, required: bool
) -> list[str]:
    """The files named by ``paths``: files as given, directories as their sorted ``*.conf``."""
    files: list[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            files.extend(sorted(glob.glob(os.path.join(path, "*.conf"))))
        elif os.path.exists(path):
            files.append(path)
        elif required:
            problems.append(ConfigProblem(path, "", "", "no such file or directory"))
    return files


def _read_files(files: Sequence[str], problems: list[ConfigProblem]) -> tuple[dict[str, Raw], dict[str, str]]:
    """Section name -> key -> RawValue, merged in file order; and where each section first appeared."""
    merged: dict[str, Raw] = {}
    origin: dict[str, str] = {}
    for path in files:
        parser = configparser.RawConfigParser(strict=False, delimiters=("=", ":"))
        try:
            with open(path, encoding="utf-8") as stream:
                parser.read_file(stream)
        except OSError as exc:
            problems.append(ConfigProblem(path, "", "", f"cannot be read: {exc.strerror}"))
            continue
        except UnicodeDecodeError:
            problems.append(ConfigProblem(path, "", "", "is not UTF-8 text"))
            continue
        except configparser.Error as exc:
            problems.append(ConfigProblem(path, "", "", _parse_error(exc)))
            continue
        for section in parser.sections():
            name = " ".join(section.lower().split())
            origin.setdefault(name, path)
            target = merged.setdefault(name, {})
            for key, value in parser.items(section):
                target[key] = RawValue(value, path)
    return merged, origin


def _parse_error(exc: configparser.Error) -> str:
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a key before any [section] header"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in exc.errors)
        return f"cannot parse line(s) {lines}: expected 'key = value'"
    return exc.message if hasattr(exc, "message") else str(exc)


class _Loader:
    """One load of a file set; collects problems and warnings as it goes."""

    def __init__(self, raw: dict[str, Raw], origin: dict[str, str], hostname: str, fetch_pipes: bool) -> None:
        self.raw = raw
        self.origin = origin
        self.hostname = hostname
        self.fetch_pipes = fetch_pipes
        self.directories: dict[str, str] = {}  # machinetype section -> its files, where not the default
        self.problems: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []

    def problem(self, file: str, section: str, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(file, section, key, message))

    def warn(self, file: str, section: str, key: str, message: str) -> None:
        self.warnings.append(ConfigProblem(file, section, key, message))

    def load(self, files: Sequence[str]) -> Config:
        kinds = self._classify()
        settings = self._settings(kinds.get("settings", []))
        demands = {name: self._demand(section, name) for section, (name,) in kinds.get("demand", [])}
        machinetypes = kinds.setdefault("machinetype", [])
        pipes = {space for _, (space, _prefix) in kinds.get("vacuum_pipe", [])}
        for section, (space, prefix) in kinds.get("vacuum_pipe", []):
            self._vacuum_pipe(section, space, prefix, settings, machinetypes)
        spaces: dict[str, SpaceConfig] = {}
        for section, (name,) in kinds.get("space", []):
            mine = [(s, mt) for s, (sp, mt) in machinetypes if sp == name]
            built = self._space(section, name, mine, settings, demands)
            if built is not None:
                spaces[name] = built
            if not mine and name not in pipes:
                self.problem(self.origin[section], section, "", f"a space needs at least one [machinetype {name} NAME]")
        space_names = {name for _, (name,) in kinds.get("space", [])}
        for section, (space, _mt) in machinetypes + kinds.get("vacuum_pipe", []):
            if space not in space_names:
                self.problem(self.origin[section], section, "",
                             f"there is no [space {space}] section{did_you_mean(space, space_names)}")
        self._cross_checks(spaces)
        if self.problems:
            raise ConfigError(self.problems)
        return Config(settings, spaces, demands, tuple(files), tuple(self.warnings))

    def _cross_checks(self, spaces: Mapping[str, SpaceConfig]) -> None:
        for space in spaces.values():
            for mt in space.machinetypes.values():
                proxy = mt.cvmfs_proxy_machinetype
                if proxy is not None and proxy not in space.machinetypes:
                    self.problem(mt.file, f"machinetype {space.name} {mt.name}", "cvmfs_proxy_machinetype",
                                 f"there is no machinetype {proxy!r} in space {space.name}")

    def _classify(self) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        shapes = {"settings": 1, "space": 2, "demand": 2, "machinetype": 3, "vacuum_pipe": 3}
        names = {
            "space": (sections.SPACE_NAME, "a-z 0-9 . -"),
            "demand": (sections.DEMAND_NAME, "a-z 0-9 . _ -"),
            "machinetype": (sections.MACHINETYPE_NAME, "a-z 0-9 -"),
            "vacuum_pipe": (sections.MACHINETYPE_NAME, "a-z 0-9 -"),
        }
        kinds: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for section in self.raw:
            parts = section.split()
            kind = parts[0]
            if kind not in shapes or len(parts) != shapes[kind]:
                self.problem(self.origin[section], section, "", "unknown section: expected [settings], [space NAME], "
                             "[machinetype SPACE NAME], [vacuum_pipe SPACE PREFIX] or [demand NAME]")
                continue
            args = tuple(parts[1:])
            if kind in names and not self._valid_names(section, kind, args, names[kind]):
                continue
            kinds.setdefault(kind, []).append((section, args))
        return kinds

    def _valid_names(self, section: str, kind: str, args: tuple[str, ...], rule: tuple[str, str]) -> bool:
        checks = [(args[-1], rule)]
        if kind in ("machinetype", "vacuum_pipe"):
            checks.insert(0, (args[0], (sections.SPACE_NAME, "a-z 0-9 . -")))
        for value, (pattern, allowed) in checks:
            if not re.fullmatch(pattern, value):
                self.problem(self.origin[section], section, "", f"name {value!r} may only contain {allowed}")
                return False
        return True

    def _parse(
        self, section: str, table: Mapping[str, Option], extra: Mapping[str, Option] | None = None
    ) -> dict[str, Any]:
        both = {**table, **(extra or {})}
        return parse_section(both, self.raw[section], section, self.origin[section], self.problems)

    def _unknown(self, section: str, known: set[str], *, user_data: bool = False) -> None:
        for key, item in self.raw[section].items():
            if key in known:
                continue
            if user_data and re.fullmatch(r"user_data_(option|file)_" + sections.OPTION_SUFFIX, key):
                continue
            if user_data and key.startswith("user_data_"):
                self.warn(item.file, section, key, "is not an option (the old vcycle ignored it too); ignored"
                          + did_you_mean(key, known))
                continue
            self.problem(item.file, section, key, "unknown key" + did_you_mean(key, known))

    def _compat(self, section: str, kind: str, api: ApiOptions | None = None) -> None:
        raw = self.raw[section]
        for old, new in sections.DEPRECATED.get(kind, {}).items():
            if old not in raw:
                continue
            item = raw.pop(old)
            if new in raw:
                self.warn(item.file, section, old, f"is deprecated and ignored, as {new} is also given")
            else:
                self.warn(item.file, section, old, f"is deprecated; use {new}")
                raw[new] = item
        no_effect = dict(sections.NO_EFFECT.get(kind, {}))
        if api is not None:
            no_effect.update(api.no_effect)
        for key, why in no_effect.items():
            if key in raw:
                self.warn(raw.pop(key).file, section, key, f"has no effect any more ({why})")

    def _settings(self, found: list[tuple[str, tuple[str, ...]]]) -> Settings:
        if not found:
            values = {name: option.default for name, option in sections.SETTINGS.items()}
        else:
            section = found[0][0]
            values = self._parse(section, sections.SETTINGS)
            self._unknown(section, set(sections.SETTINGS))
        values["manager_name"] = values["manager_name"] or self.hostname
        values["file"] = self.origin[found[0][0]] if found else ""
        values["joboutputs_dir"] = values["joboutputs_dir"] or os.path.join(values["state_dir"], "joboutputs")
        if values["https_listen"] is not None and found:
            for key in ("https_cert", "https_key"):
                if values[key] is None:
                    self.problem(self.origin[found[0][0]], found[0][0], key, "needed when https_listen is set")
        return Settings(**values)

    def _demand(self, section: str, name: str) -> DemandConfig:
        common = self._parse(section, sections.DEMAND_COMMON)
        kind = common["type"]
        table = sections.DEMAND.get(kind, {})
        if kind and kind not in sections.DEMAND:
            self.problem(self.origin[section], section, "type",
                         f"demand type {kind!r} is not available in this version yet")
        values = self._parse(section, table)
        self._unknown(section, set(sections.DEMAND_COMMON) | set(table))
        least = sections.MIN_POLL_SECONDS
        if 0 < values.get("poll_seconds", 0) < least:
            self.problem(self.origin[section], section, "poll_seconds",
                         f"{values['poll_seconds']:g} is too often: {least:g} at least (or 0: not at all)")
        if kind == "dirac" and not values["configuration"] and not values["matcher_url"]:
            self.problem(self.origin[section], section, "matcher_url",
                         "DIRAC's Matcher is needed: set matcher_url, or configuration (a dirac.cfg naming it)")
        return DemandConfig(name, kind or "", values, self.origin[section])

    def _vacuum_pipe(self, section: str, space: str, prefix: str, settings: Settings,
                     machinetypes: list[tuple[str, tuple[str, ...]]]) -> None:
        """Expand a pipe into machinetype sections; an unreadable pipe is a warning, not an error."""
        self._compat(section, "machinetype")
        values = self._parse(section, sections.VACUUM_PIPE)
        self._unknown(section, set(sections.VACUUM_PIPE) | set(sections.MACHINETYPE), user_data=True)
        url, file = values["vacuum_pipe_url"], self.origin[section]
        if url is None:
            return
        cached = vacuum_pipe.cache_path(settings.state_dir, space, prefix)
        try:
            if self.fetch_pipes and url.startswith(("http://", "https://")):
                vacuum_pipe.fetch(url, cached)
        except vacuum_pipe.PipeError as exc:
            self.warn(file, section, "vacuum_pipe_url", f"cannot refresh the pipe, using the cached copy: {exc}")
        try:
            document = vacuum_pipe.read(url, cached)
        except vacuum_pipe.PipeError as exc:
            self.warn(file, section, "vacuum_pipe_url", f"{exc}: its machinetypes are not created")
            return
        expanded, warnings = vacuum_pipe.expand(document, self.raw[section], url, values["target_share"])
        for warning in warnings:
            self.warn(file, section, "vacuum_pipe_url", warning)
        known = {name for name, _ in machinetypes}
        for suffix, raw in expanded.items():
            name = f"{prefix}-{suffix}"
            target = f"machinetype {space} {name}"
            self.raw[target] = {**raw, **self.raw.get(target, {})}
            self.origin.setdefault(target, file)
            self.directories[target] = os.path.dirname(cached)
            if target not in known:
                machinetypes.append((target, (space, name)))

    def _api(self, section: str) -> tuple[str, ApiOptions | None]:
        import vcycle.connectors as connectors

        item = self.raw[section].get("api")
        if item is None:
            return "", None
        name = item.value.strip().lower()
        try:
            return name, connectors.api_options(name)
        except KeyError:
            known = connectors.api_names()
            self.problem(item.file, section, "api", f"unknown api {name!r}; this vcycle knows {', '.join(known)}"
                         + did_you_mean(name, known))
        except ImportError as exc:
            self.problem(item.file, section, "api", f"api {name!r} cannot be loaded: {exc}")
        return name, None

    def _space(self, section: str, name: str, machinetypes: list[tuple[str, str]], settings: Settings,
               demands: Mapping[str, DemandConfig]) -> SpaceConfig | None:
        api_name, api = self._api(section)
        self._compat(section, "space", api)
        api_table = dict(api.space) if api else {}
        before = len(self.problems)
        values = self._parse(section, sections.SPACE, api_table)
        self._unknown(section, set(sections.SPACE) | set(api_table) if api else set(self.raw[section]))
        if len(self.problems) == before:
            self._api_check(section, api, values)
        values["https_host"] = values["https_host"] or settings.manager_name
        secrets = _secret_keys({**sections.SPACE, **api_table}, values)
        mts = {mt: self._machinetype(s, name, mt, values, api, settings, demands) for s, mt in machinetypes}
        if api is None:
            return None
        return SpaceConfig(
            name=name, api=api_name, file=self.origin[section], processors_limit=values["processors_limit"],
            shutdown_time=values["shutdown_time"], https_host=values["https_host"],
            https_port=values["https_port"], cleanup_hours=values["cleanup_hours"], machinetypes=mts,
            values=values, secrets=secrets,
        )

    def _api_check(self, section: str, api: ApiOptions | None, values: Mapping[str, Any]) -> None:
        if api is None or api.check is None:
            return
        raw = self.raw[section]
        for key, message in api.check(values):
            file = raw[key].file if key in raw else self.origin[section]
            self.problem(file, section, key, message)

    def _machinetype(self, section: str, space: str, name: str, space_values: Mapping[str, Any],
                     api: ApiOptions | None, settings: Settings,
                     demands: Mapping[str, DemandConfig]) -> MachinetypeConfig:
        self._compat(section, "machinetype", api)
        api_table = dict(api.machinetype) if api else {}
        values = self._parse(section, sections.MACHINETYPE, api_table)
        known = set(sections.MACHINETYPE) | set(api_table)
        self._unknown(section, known if api else known | set(self.raw[section]), user_data=True)
        self._machinetype_checks(section, values, demands)
        raw = self.raw[section]
        options = {k: v.value for k, v in raw.items() if k.startswith("user_data_option_")}
        files = {k: v.value.strip() for k, v in raw.items() if k.startswith("user_data_file_")}
        proxy, _, port = (values["cvmfs_proxy_machinetype"] or "").partition(":")
        if values["flavor_names"] is None:
            values["flavor_names"] = space_values["flavor_names"]
        if values["volume_gb_per_processor"] is None:
            values["volume_gb_per_processor"] = space_values["volume_gb_per_processor"]
        if values["max_starting_processors"] is None:
            values["max_starting_processors"] = values["processors_limit"]
        shown = {**values, **options, **files}
        secrets = _secret_keys({**sections.MACHINETYPE, **api_table}, values) | {k for k in options if looks_secret(k)}
        return MachinetypeConfig(
            space=space, name=name, file=self.origin[section],
            directory=self.directories.get(section) or os.path.join(settings.state_dir, "spaces", space,
                                                                    "machinetypes", name),
            cvmfs_proxy_machinetype=proxy or None, cvmfs_proxy_port=int(port) if port else 280,
            user_data_options=options, user_data_files=files, values=shown, secrets=secrets,
            **{k: values[k] for k in _MACHINETYPE_FIELDS},
        )

    def _machinetype_checks(self, section: str, values: Mapping[str, Any], demands: Mapping[str, DemandConfig]) -> None:
        file = self.origin[section]
        low, high = values["min_processors"], values["max_processors"]
        if high is not None and low is not None and high < low:
            self.problem(file, section, "max_processors", f"max_processors {high} is less than min_processors {low}")
        demand = values["demand"]
        if demand is not None and demand not in demands:
            item = self.raw[section]["demand"]
            self.problem(item.file, section, "demand",
                         f"there is no [demand {demand}] section" + did_you_mean(demand, demands))
        elif demand is not None and demands[demand].type == "sitedirector" and not values["target_share"]:
            self.problem(file, section, "target_share", "must be more than 0: DIRAC's SiteDirector submits pilots "
                         f"for this machinetype ([demand {demand}] type = sitedirector), which would never get "
                         "machines")


_MACHINETYPE_FIELDS = (
    "user_data", "root_image", "flavor_names", "min_processors", "max_processors", "hs06_per_processor",
    "mb_per_processor", "disk_gb_per_processor", "volume_gb_per_processor", "target_share", "backoff_seconds",
    "fizzle_seconds", "processors_limit", "max_starting_processors", "max_wallclock_seconds", "heartbeat_file",
    "heartbeat_seconds", "https_x509dn", "demand", "jobs_per_machine",
)


def _secret_keys(table: Mapping[str, Option], values: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(k for k, option in table.items() if option.secret and values.get(k) is not None)


def load_config(
    paths: Sequence[str | os.PathLike[str]] | None = None, *, hostname: str | None = None, fetch_pipes: bool = False
) -> Config:
    """Read and validate a file set; ``paths`` default to the old vcycle's locations.

    ``fetch_pipes`` refreshes the cached copies of http(s) vacuum pipes first.

    Raises ConfigError listing every problem found.
    """
    problems: list[ConfigProblem] = []
    files = expand_paths(paths if paths else DEFAULT_PATHS, problems, required=bool(paths))
    if not files and not problems:
        searched = ", ".join(map(str, paths or DEFAULT_PATHS))
        problems.append(ConfigProblem(searched, "", "", "no configuration files found"))
    raw, origin = _read_files(files, problems)
    loader = _Loader(raw, origin, hostname or socket.gethostname(), fetch_pipes)
    loader.problems.extend(problems)
    return loader.load(files)

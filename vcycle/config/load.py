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

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from vcycle import connectors, demand
from vcycle.config import compat, vacuum_pipe
from vcycle.config.files import Raw, expand_paths, read_files
from vcycle.connectors.base import ConnectorPlugin
from vcycle.core import drift, sections
from vcycle.core.options import Option, did_you_mean, looks_secret, parse_section, table
from vcycle.core.sections import Config, DemandConfig, MachinetypeConfig, Settings, SpaceConfig
from vcycle.demand.base import DemandPlugin
from vcycle.errors import ConfigError, ConfigProblem, PipeError, RenderError
from vcycle.userdata import sources

DEFAULT_PATHS = ("/var/lib/vcycle/shared/vcycle.d", "/etc/vcycle.d", "/etc/vcycle.conf")

USER_DATA_KEY = re.compile(r"user_data_(option|file)_[a-z0-9_]+")


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
        demands = {name: found for section, (name,) in kinds.get("demand", [])
                   if (found := self._demand(section, name)) is not None}
        machinetypes = kinds.setdefault("machinetype", [])
        pipes = {space for _, (space, _prefix) in kinds.get("vacuum_pipe", [])}
        for section, (space, prefix) in kinds.get("vacuum_pipe", []):
            self._vacuum_pipe(section, space, prefix, settings, machinetypes)
        spaces: dict[str, SpaceConfig] = {}
        for section, (name,) in kinds.get("space", []):
            mine = [(s, mt) for s, (sp, mt) in machinetypes if sp == name]
            built = self._space(section, name, mine, settings, demands, {d for _, (d,) in kinds.get("demand", [])})
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
                if proxy is not None and proxy[0] not in space.machinetypes:
                    self.problem(mt.file, f"machinetype {space.name} {mt.name}", "cvmfs_proxy_machinetype",
                                 f"there is no machinetype {proxy[0]!r} in space {space.name}")
                if mt.launch_health_failures > mt.launch_health_window:
                    self.problem(mt.file, f"machinetype {space.name} {mt.name}", "launch_health_failures",
                                 f"{mt.launch_health_failures} failures cannot happen in a launch_health_window of "
                                 f"{mt.launch_health_window} launches")

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

    def _parse(self, section: str, keys: Mapping[str, Option]) -> dict[str, Any]:
        return parse_section(keys, self.raw[section], section, self.origin[section], self.problems)

    def _unknown(self, section: str, known: set[str], *, user_data: bool = False,
                 elsewhere: Callable[[], Mapping[str, str]] | None = None) -> None:
        """Every key of ``section`` not in ``known`` is an error (``elsewhere``: the keys of other plugins and
        where they belong, asked for only when a key is unknown)."""
        for key, item in self.raw[section].items():
            if key in known:
                continue
            if user_data and USER_DATA_KEY.fullmatch(key):
                continue
            if user_data and key.startswith("user_data_"):
                self.warn(item.file, section, key, "is not an option (the old vcycle ignored it too); ignored"
                          + did_you_mean(key, known))
                continue
            belongs = elsewhere().get(key) if elsewhere is not None else None
            if belongs is not None:
                self.problem(item.file, section, key, f"is a key of {belongs}")
                continue
            self.problem(item.file, section, key, "unknown key" + did_you_mean(key, known))

    def _compat(self, section: str, kind: str, no_effect: Mapping[str, str] | None = None) -> None:
        raw = self.raw[section]
        for old, new in compat.DEPRECATED.get(kind, {}).items():
            if old not in raw:
                continue
            item = raw.pop(old)
            if new in raw:
                self.warn(item.file, section, old, f"is deprecated and ignored, as {new} is also given")
            else:
                self.warn(item.file, section, old, f"is deprecated; use {new}")
                raw[new] = item
        for key, why in {**compat.NO_EFFECT.get(kind, {}), **(no_effect or {})}.items():
            if key in raw:
                self.warn(raw.pop(key).file, section, key, f"has no effect any more ({why})")

    def _checks(self, section: str, problems: list[tuple[str, str]]) -> None:
        """A plugin's cross-key checks, each located at the key it names."""
        raw = self.raw[section]
        for key, message in problems:
            self.problem(raw[key].file if key in raw else self.origin[section], section, key, message)

    def _settings(self, found: list[tuple[str, tuple[str, ...]]]) -> Settings:
        keys = table(Settings)
        if not found:
            values = {name: option.default for name, option in keys.items()}
        else:
            section = found[0][0]
            values = self._parse(section, keys)
            self._unknown(section, set(keys))
        url = values["state_url"]
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url[10:] not in ("", ":memory:"):
            item = self.raw[found[0][0]]["state_url"]
            self.warn(item.file, found[0][0], "state_url", f"sqlite:///{url[10:]} is relative to the working "
                      f"directory of each command; write sqlite:////ABSOLUTE/PATH")
        values["manager_name"] = values["manager_name"] or self.hostname
        values["joboutputs_dir"] = values["joboutputs_dir"] or os.path.join(values["state_dir"], "joboutputs")
        values["apel_archive_dir"] = values["apel_archive_dir"] or os.path.join(values["state_dir"], "apel-archive")
        if found and values["lease_renew_seconds"] * 3 > values["lease_seconds"]:
            raw = self.raw[found[0][0]]
            key = "lease_renew_seconds" if "lease_renew_seconds" in raw else "lease_seconds"
            self.problem(raw[key].file if key in raw else self.origin[found[0][0]], found[0][0], key,
                         f"lease_renew_seconds ({values['lease_renew_seconds']:g}) must be at most a third of "
                         f"lease_seconds ({values['lease_seconds']:g}), so that a lease is renewed twice before a "
                         "slow round lets it lapse")
        if values["https_listen"] is not None and found:
            for key in ("https_cert", "https_key"):
                if values[key] is None:
                    self.problem(self.origin[found[0][0]], found[0][0], key, "needed when https_listen is set")
        return Settings(**values, file=self.origin[found[0][0]] if found else "")

    def _demand(self, section: str, name: str) -> DemandConfig | None:
        common = self._parse(section, table(DemandConfig))
        kind = (common["type"] or "").lower()
        plugin = self._plugin(section, "type", kind, demand.REGISTRY, "demand type") if kind else None
        keys = table(plugin.section) if plugin and plugin.section else {}
        values = self._parse(section, keys)
        self._unknown(section, {"type", *keys} if plugin else set(self.raw[section]))
        if plugin is None:
            return None
        options = plugin.section(**values) if plugin.section else None
        if plugin.check is not None and options is not None:
            self._checks(section, plugin.check(options))
        return DemandConfig(name=name, file=self.origin[section], type=kind, options=options)

    def _plugin(self, section: str, key: str, name: str, registry: Any, what: str) -> Any:
        """The plugin ``name`` of ``registry``, or None with the problem recorded."""
        item = self.raw[section][key]
        try:
            return registry.load(name)
        except KeyError:
            known = registry.names()
            self.problem(item.file, section, key, f"unknown {what} {name!r}; this vcycle knows {', '.join(known)}"
                         + did_you_mean(name, known))
        except (ImportError, TypeError) as exc:
            self.problem(item.file, section, key, f"{what} {name!r} cannot be loaded: {exc}")
        return None

    def _vacuum_pipe(self, section: str, space: str, prefix: str, settings: Settings,
                     machinetypes: list[tuple[str, tuple[str, ...]]]) -> None:
        """Expand a pipe into machinetype sections; an unreadable pipe is a warning, not an error."""
        self._compat(section, "machinetype")
        keys = table(vacuum_pipe.PipeSection)
        values = self._parse(section, keys)
        self._unknown(section, set(keys) | set(table(MachinetypeConfig)), user_data=True)
        url, file = values["vacuum_pipe_url"], self.origin[section]
        if url is None:
            return
        cached = vacuum_pipe.cache_path(settings.state_dir, space, prefix)
        try:
            if self.fetch_pipes and url.startswith(("http://", "https://")):
                vacuum_pipe.fetch(url, cached)
        except PipeError as exc:
            self.warn(file, section, "vacuum_pipe_url", f"cannot refresh the pipe, using the cached copy: {exc}")
        try:
            document = vacuum_pipe.read(url, cached)
        except PipeError as exc:
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

    def _space(self, section: str, name: str, machinetypes: list[tuple[str, str]], settings: Settings,
               demands: Mapping[str, DemandConfig], demand_names: set[str]) -> SpaceConfig | None:
        api = self.raw[section]["api"].value.strip().lower() if "api" in self.raw[section] else ""
        plugin: ConnectorPlugin | None = self._plugin(section, "api", api, connectors.REGISTRY, "api") if api else None
        self._compat(section, "space", plugin.no_effect if plugin else None)
        own = table(plugin.space) if plugin and plugin.space else {}
        core = table(SpaceConfig)
        before = len(self.problems)
        values = self._parse(section, core)
        cloud = self._parse(section, own)
        self._unknown(section, set(core) | set(own) if plugin else set(self.raw[section]))
        connector = plugin.space(**cloud) if plugin and plugin.space else None
        if plugin is not None and plugin.check is not None and len(self.problems) == before:
            self._checks(section, plugin.check(connector))
        values["https_host"] = values["https_host"] or settings.manager_name
        values["api"] = api
        space = SpaceConfig(name=name, file=self.origin[section], **values, connector=connector,
                            runs_script=plugin is not None and plugin.runs_script)
        mts = {mt: self._machinetype(s, space, mt, plugin, settings, demands, demand_names) for s, mt in machinetypes}
        return dataclasses.replace(space, machinetypes=mts) if plugin is not None else None

    def _machinetype(self, section: str, space: SpaceConfig, name: str, plugin: ConnectorPlugin | None,
                     settings: Settings, demands: Mapping[str, DemandConfig],
                     demand_names: set[str]) -> MachinetypeConfig:
        self._compat(section, "machinetype", plugin.no_effect if plugin else None)
        core = table(MachinetypeConfig)
        values = self._parse(section, core)
        wanted = demands.get(values["demand"]) if values["demand"] else None
        source: DemandPlugin | None = demand.REGISTRY.load(wanted.type) if wanted is not None else None
        cloud_keys = table(plugin.machinetype) if plugin and plugin.machinetype else {}
        source_keys = table(source.machinetype) if source and source.machinetype else {}
        cloud, mine = self._parse(section, cloud_keys), self._parse(section, source_keys)
        known = set(core) | set(cloud_keys) | set(source_keys)
        self._unknown(section, known if plugin else known | set(self.raw[section]), user_data=True,
                      elsewhere=partial(_source_keys, values["demand"]))
        raw = self.raw[section]
        values.update(
            user_data_options={k: v.value for k, v in raw.items() if k.startswith("user_data_option_")},
            user_data_files={k: v.value.strip() for k, v in raw.items() if k.startswith("user_data_file_")})
        if values["flavor_names"] is None:
            values["flavor_names"] = space.flavor_names
        if values["volume_gb_per_processor"] is None:
            values["volume_gb_per_processor"] = space.volume_gb_per_processor
        if values["max_starting_processors"] is None:
            values["max_starting_processors"] = values["processors_limit"]
        directory = self.directories.get(section) or os.path.join(settings.state_dir, "spaces", space.name,
                                                                  "machinetypes", name)
        mt = MachinetypeConfig(
            space=space.name, name=name, file=self.origin[section], directory=directory, **values,
            connector=plugin.machinetype(**cloud) if plugin and plugin.machinetype else None,
            source=source.machinetype(**mine) if source and source.machinetype else None)
        self._machinetype_checks(section, mt, demand_names, source)
        if plugin is not None:
            self._offering_checks(section, mt, space.api, plugin)
        if plugin is not None and plugin.check_machinetype is not None:
            self._checks(section, plugin.check_machinetype(mt))
        return dataclasses.replace(mt, made_by=drift.fingerprint(space, mt, _template_texts(mt)))

    def _offering_checks(self, section: str, mt: MachinetypeConfig, api: str, plugin: ConnectorPlugin) -> None:
        """zones and capacity_types name only what the space's connector makes."""
        if mt.zones and not plugin.zones:
            self.problem(self.raw[section]["zones"].file, section, "zones",
                         f"the {api} connector cannot make a machine in a zone it is given: leave zones out")
        other = [word for word in mt.capacity_types if word not in plugin.capacity_types]
        if other:
            can = " or ".join(plugin.capacity_types) or "none"
            self.problem(self.raw[section]["capacity_types"].file, section, "capacity_types",
                         f"the {api} connector cannot make {' or '.join(other)} machines (it makes {can}): "
                         "leave capacity_types out")

    def _machinetype_checks(self, section: str, mt: MachinetypeConfig, demand_names: set[str],
                            source: DemandPlugin | None) -> None:
        if mt.max_processors is not None and mt.max_processors < mt.min_processors:
            self.problem(mt.file, section, "max_processors",
                         f"max_processors {mt.max_processors} is less than min_processors {mt.min_processors}")
        if mt.demand is not None and mt.demand not in demand_names:
            self.problem(self.raw[section]["demand"].file, section, "demand",
                         f"there is no [demand {mt.demand}] section" + did_you_mean(mt.demand, demand_names))
        if source is not None and source.check_machinetype is not None:
            self._checks(section, source.check_machinetype(mt))


def _template_texts(mt: MachinetypeConfig) -> list[str]:
    """The text of each of the machinetype's templates where it can be read now (a file, a shipped one); its
    name where not (a URL, fetched when rendered; a file that is missing, which rendering reports)."""
    texts = []
    for source in (mt.user_data or "").split():  # None where the key is missing: reported as a problem
        try:
            texts.append(sources.load(source, mt, None).text)
        except RenderError:
            texts.append(source)
    return texts


def _source_keys(demand_name: str | None) -> dict[str, str]:
    """Every key a demand type adds to machinetypes, and where it belongs (for a key given without its source)."""
    found: dict[str, str] = {}
    for kind in demand.REGISTRY.names():
        try:
            plugin = demand.REGISTRY.load(kind)
        except (ImportError, TypeError):
            continue
        for key in table(plugin.machinetype) if plugin.machinetype else {}:
            naming = f"demand = {demand_name}" if demand_name else "no demand"
            found[key] = (f"machinetypes whose demand is a [demand NAME] section of type = {kind} (this one has "
                          f"{naming})")
    return found


def secret_keys(options: object) -> set[str]:
    """The keys of a section object declared secret, and user_data_option keys that look secret."""
    found = {name for name, option in table(type(options)).items() if option.secret} if options is not None else set()
    if isinstance(options, MachinetypeConfig):
        found |= {k for k in options.user_data_options if looks_secret(k)}
    return found


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
    found = read_files(files)
    loader = _Loader(found.sections, found.origin, hostname or socket.gethostname(), fetch_pipes)
    loader.problems.extend(problems + found.problems)
    loader.warnings.extend(found.warnings)
    return loader.load(files)

"""What ``vcycle check-config`` checks beyond loading: what ``cycle`` and ``daemon`` would refuse later.

Offline (every run, the systemd unit's ExecStartPre included): the endpoint's
certificate and key when ``https_listen`` is set, the APEL queues (writable,
and which spaces send to ``apel_outgoing_dir``), and the user-data of every
machinetype rendered for a sample machine, as a create would render it (a
template that fetches from a URL is rendered from the cached copy, or said to
be unchecked), with a warning for each ``##user_data_option_X##`` that no
option sets. ``--online`` also asks each cloud, changing nothing: its
listing (the credentials work), its flavors (those ``flavor_names`` names are
offered, with the processors asked for), and its images (where the connector
can look them up), and fetches URL templates.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime

from vcycle.core import rules
from vcycle.core.sections import Config, MachinetypeConfig, SpaceConfig
from vcycle.errors import ConfigError, ConfigProblem, RenderError, VcycleError
from vcycle.loop.launch import renderer, sample
from vcycle.userdata.render import LEFTOVER, option_values
from vcycle.userdata.sources import Fetcher, load, template_cache


class _Cached(Fetcher):
    """A fetcher that reads the template cache and never the network (for the offline checks)."""

    def get(self, url: str) -> str:
        if not os.path.exists(self.path(url)):
            raise _NotFetched(url)
        with open(self.path(url), encoding="utf-8", errors="replace") as stream:
            return stream.read()


class _NotFetched(RenderError):
    pass


def offline(config: Config) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(errors, warnings) of the endpoint's files and of every machinetype's user-data."""
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    if config.settings.https_listen is not None:
        from vcycle.web.server import check_files

        try:
            check_files(config.settings)
        except ConfigError as exc:
            errors.extend(exc.problems)
    apel_errors, apel_warnings = _apel(config)
    errors.extend(apel_errors)
    warnings.extend(apel_warnings)
    fetcher = _Cached(template_cache(config.settings.state_dir))
    for space, mt in _machinetypes(config):
        try:
            render_sample(config, space, mt, fetcher)
        except _NotFetched as exc:
            warnings.append(_problem(mt, "user_data", f"{exc} is not in the template cache: not checked "
                                     "(vcycle check-config --online fetches it)"))
        except (VcycleError, OSError) as exc:
            errors.append(_problem(mt, "user_data", f"does not render for a sample machine: {exc}"))
        else:
            warnings.extend(_problem(mt, "user_data", message) for message in unset_options(mt, fetcher))
    return errors, warnings


def _apel(config: Config) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """The APEL queues can be written (or made); the spaces whose records would not be sent, for want of a
    gocdb_sitename."""
    settings = config.settings
    errors: list[ConfigProblem] = []
    for key in ("apel_outgoing_dir", "apel_archive_dir"):
        path = getattr(settings, key)
        if path and not _writable(path):
            errors.append(ConfigProblem(settings.file, "settings", key, f"{path} cannot be written by this user "
                                        "(nor made): APEL messages would not be kept"))
    warnings = [ConfigProblem(space.file, f"space {space.name}", "gocdb_sitename",
                              "not set: its APEL records are archived but not sent to apel_outgoing_dir")
                for space in config.spaces.values() if settings.apel_outgoing_dir and not space.gocdb_sitename]
    return errors, warnings


def _writable(path: str) -> bool:
    """The directory is writable, or the nearest one above it that exists is (so it can be made)."""
    while not os.path.exists(path):
        parent = os.path.dirname(path.rstrip("/")) or "/"
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def unset_options(mt: MachinetypeConfig, fetcher: Fetcher) -> list[str]:
    """The ``##user_data_option_X##`` of old-style templates that no ``user_data_option_X`` sets (they are
    removed, as the old vcycle removed them: the machine gets an empty value)."""
    given = set(option_values(mt)) | ({"x509_proxy"} if mt.user_data_proxy else set())
    found = []
    for source in mt.user_data.split():
        template = load(source, mt, fetcher)
        for pattern in sorted(set(LEFTOVER.findall(template.text))):
            name = pattern[len("##user_data_"):-2]
            if name.startswith("option_") and name[len("option_"):] not in given:
                found.append(f"{source} uses {pattern} but no user_data_{name} is set: the machines get it empty")
    return found


def online(config: Config, make: Callable[[SpaceConfig], object]) -> list[ConfigProblem]:
    """Problems found by asking each cloud (``make`` gives a space's connector) and fetching URL templates."""
    problems: list[ConfigProblem] = []
    with tempfile.TemporaryDirectory(prefix="vcycle-check-") as cache:
        fetcher = Fetcher(cache)  # a scratch cache: the real one is left as it is
        for space, mt in _machinetypes(config):
            if any(s.startswith(("http://", "https://")) for s in mt.user_data.split()):
                try:
                    render_sample(config, space, mt, fetcher)
                except (VcycleError, OSError) as exc:
                    problems.append(_problem(mt, "user_data", f"does not render for a sample machine: {exc}"))
    for space in config.spaces.values():
        problems.extend(_cloud(space, make))
    return problems


def render_sample(config: Config, space: SpaceConfig, mt: MachinetypeConfig, fetcher: Fetcher) -> bytes:
    """The user-data of a sample new machine of ``mt``, prepared as a create prepares it."""
    manager = config.settings.manager_name
    return sample(space, mt, manager=manager, render=renderer(manager, fetcher), now=datetime.now(UTC),
                  reason="vcycle check-config").spec.user_data


def _cloud(space: SpaceConfig, make: Callable[[SpaceConfig], object]) -> list[ConfigProblem]:
    def problem(message: str, mt: MachinetypeConfig | None = None, key: str = "") -> ConfigProblem:
        if mt is not None:
            return _problem(mt, key, message)
        return ConfigProblem(space.file, f"space {space.name}", key, message)

    try:
        connector = make(space)
        connector.list_machines()  # type: ignore[attr-defined]
    except (VcycleError, ImportError, OSError) as exc:
        return [problem(f"the {space.api} cloud cannot be used: {exc}")]
    problems = []
    try:
        flavors = connector.flavors()  # type: ignore[attr-defined]
    except VcycleError as exc:
        problems.append(problem(f"flavors cannot be listed: {exc}"))
        flavors = None
    for mt in space.machinetypes.values():
        if flavors is not None and mt.flavor_names:
            chosen = rules.choose_flavor(mt, flavors)
            if isinstance(chosen, str):
                problems.append(problem(chosen, mt, "flavor_names"))
    check_images = getattr(connector, "check_images", None)
    if check_images is not None:
        try:
            found = check_images({mt.name: mt.root_image for mt in space.machinetypes.values()})
        except VcycleError as exc:
            found = {}
            problems.append(problem(f"images cannot be looked up: {exc}"))
        problems.extend(problem(why, space.machinetypes[name], "root_image") for name, why in found.items())
    return problems


def _machinetypes(config: Config) -> list[tuple[SpaceConfig, MachinetypeConfig]]:
    return [(space, mt) for space in config.spaces.values() for mt in space.machinetypes.values()]


def _problem(mt: MachinetypeConfig, key: str, message: str) -> ConfigProblem:
    return ConfigProblem(mt.file, f"machinetype {mt.space} {mt.name}", key, message)

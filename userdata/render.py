"""Render a machine's user-data from its machinetype's template.

Old vcycle templates (``##user_data_...##`` patterns) are rendered exactly
as the original vcycle did: every built-in substitution, the deprecated
names, ``user_data_option_XXX`` values and ``user_data_file_XXX`` file
contents, then any ``##user_data_...##`` left over is removed. Templates are
read from an absolute path, from the machinetype's ``files`` directory for
a relative path (as before), or from the templates shipped in this package.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from vcycle import __version__
from vcycle.config import MachinetypeConfig, SpaceConfig
from vcycle.errors import VcycleError
from vcycle.model import CreateOrder

LEFTOVER = re.compile(r"##user_data_[A-Za-z0-9_]*##")


class RenderError(VcycleError):
    """The machinetype's user-data cannot be rendered; no machine of it is created."""


@dataclass(frozen=True, slots=True)
class MachineContext:
    """What a template may know about the machine it starts."""

    space: str
    machinetype: str
    machine: str
    manager: str
    site: str
    processors: int
    shutdown_at: datetime
    request_id: str
    base_url: str  # https://HOST:PORT of vcycle's endpoint

    @property
    def machine_url(self) -> str:
        return f"{self.base_url}/machines/{self.space}/{self.machine}"


def files_directory(mt: MachinetypeConfig) -> str:
    return os.path.join(mt.directory, "files")


def resolve(path: str, mt: MachinetypeConfig) -> str:
    """An absolute path as given; a relative one inside the machinetype's files directory."""
    return path if os.path.isabs(path) else os.path.join(files_directory(mt), path)


@functools.lru_cache(maxsize=256)
def _read_cached(path: str, mtime_ns: int) -> str:
    with open(path, encoding="utf-8") as stream:
        return stream.read()


def read_template(mt: MachinetypeConfig) -> str:
    """The machinetype's template text (re-read when the file changes); RenderError if it cannot be read."""
    source = mt.user_data
    if source.startswith(("http://", "https://")):
        raise RenderError(f"user_data {source}: templates fetched over http(s) arrive with the user-data issue")
    local = resolve(source, mt)
    if os.path.exists(local) or os.path.isabs(source):
        try:
            return _read_cached(local, os.stat(local).st_mtime_ns)
        except OSError as exc:
            raise RenderError(f"user_data {local}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise RenderError(f"user_data {local}: not UTF-8 text") from None
    shipped = _shipped(source)
    if shipped is not None:
        return shipped
    raise RenderError(f"user_data {source!r}: no such file {local} and no shipped template of that name")


@functools.lru_cache(maxsize=64)
def _shipped(name: str) -> str | None:
    found = resources.files("vcycle.userdata").joinpath("templates", name)
    return found.read_text(encoding="utf-8") if found.is_file() else None


def substitutions(ctx: MachineContext, mt: MachinetypeConfig) -> dict[str, str]:
    """Every built-in ``##user_data_...##`` value, old names included."""
    version = f"vcycle {__version__}"
    root_image = mt.root_image or ""
    values = {
        "space": ctx.space, "site": ctx.site, "machinetype": ctx.machinetype, "machine_hostname": ctx.machine,
        "manager_version": version, "manager_hostname": ctx.manager,
        "machinefeatures_url": ctx.machine_url + "/machinefeatures",
        "jobfeatures_url": ctx.machine_url + "/jobfeatures", "joboutputs_url": ctx.machine_url + "/joboutputs",
        "heartbeat_machines_url": f"{ctx.base_url}/heartbeatmachines/{ctx.space}",
        "root_image_url": root_image if root_image.startswith(("http://", "https://")) else "",
        "url": mt.user_data if mt.user_data.startswith(("http://", "https://")) else "",
        "uuid": ctx.request_id,
        # deprecated names, kept for old templates
        "vmtype": ctx.machinetype, "vm_hostname": ctx.machine, "vmlm_version": version,
        "vmlm_hostname": ctx.manager,
    }
    return {f"##user_data_{k}##": v for k, v in values.items()}


def option_values(mt: MachinetypeConfig) -> dict[str, str]:
    """``##user_data_option_XXX##`` -> value, from options and (deprecated) files."""
    result = {f"##{key}##": value for key, value in mt.user_data_options.items()}
    for key, path in mt.user_data_files.items():
        name = "##user_data_option_" + key[len("user_data_file_"):] + "##"
        try:
            with open(resolve(path, mt), encoding="utf-8") as stream:
                result[name] = stream.read()
        except OSError as exc:
            raise RenderError(f"{key} = {path}: {exc.strerror}") from exc
        result["##" + key + "##"] = result[name]
    return result


def render_old_style(template: str, values: Mapping[str, str]) -> str:
    """Apply every substitution, then remove what is left of ``##user_data_...##``."""
    for pattern, value in values.items():
        template = template.replace(pattern, value)
    return LEFTOVER.sub("", template)


def render_user_data(space: SpaceConfig, mt: MachinetypeConfig, name: str, order: CreateOrder, request_id: str,
                     *, manager: str) -> bytes:
    """The user-data of a new machine ``name`` of ``mt`` in ``space``."""
    if mt.values.get("user_data_proxy"):
        raise RenderError("user_data_proxy = true: X.509 proxies arrive with the user-data issue")
    ctx = MachineContext(space.name, mt.name, name, manager, space.values.get("gocdb_sitename") or space.name,
                         order.processors, order.shutdown_at, request_id,
                         f"https://{space.https_host}:{space.https_port}")
    values = {**substitutions(ctx, mt), **option_values(mt)}
    return render_old_style(read_template(mt), values).encode("utf-8")

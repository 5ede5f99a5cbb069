"""Render a machine's user-data from its machinetype's templates.

Two kinds of template, chosen by the file name: jinja2 templates
(``*.j2``, StrictUndefined, so a missing value is an error naming it), and
old vcycle templates with ``##user_data_...##`` patterns, rendered exactly
as the original vcycle did: every built-in substitution, the deprecated
names, ``user_data_option_XXX`` values and ``user_data_file_XXX`` file
contents, then whatever ``##user_data_...##`` is left removed.

``user_data`` may name several templates (separated by spaces): each is a
part of one MIME multipart document, as cloud-init expects it.
"""

from __future__ import annotations

import base64
import functools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2

from vcycle import __version__
from vcycle.core import identity
from vcycle.core.model import CreateOrder
from vcycle.core.sections import MachinetypeConfig, SpaceConfig
from vcycle.errors import RenderError

from .multipart import combine
from .proxy import proxy_for
from .sources import Fetcher, Template, load, resolve

LEFTOVER = re.compile(r"##user_data_[A-Za-z0-9_]*##")
# The loader serves the shipped templates, which a running vcycle does not see change: they are not looked at
# on disk again at each render (auto_reload). A site's own templates are read by ``load`` and compiled from text.
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                            loader=jinja2.PackageLoader("vcycle.userdata", "templates"), auto_reload=False)
_JINJA.filters["shquote"] = lambda value: shlex.quote(str(value))  # for values put into shell scripts
_JINJA.filters["b64encode"] = lambda value: base64.b64encode(str(value).encode()).decode()  # write_files b64

__all__ = ["MachineContext", "RenderError", "render_user_data"]


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
    urls: Mapping[str, str]  # its URLs on vcycle's endpoint (identity.machine_urls)
    token: str | None = None  # the machine's one-time token for the HTTPS endpoint, once there is one
    pilot_stamp: str = ""  # the pilot factory's stamp of the pilot the machine runs, if it runs one
    pilot_wrapper: str = field(default="", repr=False)  # that pilot's wrapper script: it carries a proxy
    script: bool = False  # its cloud runs the user-data as a script (a container), not through cloud-init


def substitutions(ctx: MachineContext, mt: MachinetypeConfig) -> dict[str, str]:
    """Every built-in ``##user_data_...##`` value, old names included."""
    version = f"vcycle {__version__}"
    root_image = mt.root_image or ""
    values = {
        "space": ctx.space, "site": ctx.site, "machinetype": ctx.machinetype, "machine_hostname": ctx.machine,
        "manager_version": version, "manager_hostname": ctx.manager,
        "root_image_url": root_image if root_image.startswith(("http://", "https://")) else "",
        "url": mt.user_data if mt.user_data.startswith(("http://", "https://")) else "",
        "uuid": ctx.request_id,
        # the pilot DIRAC's SiteDirector submitted, for machines that run one (empty otherwise)
        "pilot_stamp": ctx.pilot_stamp,
        "pilot_wrapper_base64": base64.b64encode(ctx.pilot_wrapper.encode()).decode() if ctx.pilot_wrapper else "",
        # deprecated names, kept for old templates
        "vmtype": ctx.machinetype, "vm_hostname": ctx.machine, "vmlm_version": version, "vmlm_hostname": ctx.manager,
        **{k: v for k, v in ctx.urls.items() if k in ("machinefeatures_url", "jobfeatures_url", "joboutputs_url",
                                                      "heartbeat_machines_url")},
    }
    return {f"##user_data_{k}##": v for k, v in values.items()}


def option_values(mt: MachinetypeConfig) -> dict[str, str]:
    """Option name (XXX of user_data_option_XXX) -> value, from options and (deprecated) files."""
    result = {key[len("user_data_option_"):]: value for key, value in mt.user_data_options.items()}
    for key, path in mt.user_data_files.items():
        try:
            with open(resolve(path, mt), encoding="utf-8") as stream:
                result[key[len("user_data_file_"):]] = stream.read()
        except OSError as exc:
            raise RenderError(f"{key} = {path}: {exc.strerror}") from exc
    return result


def render_old_style(template: str, values: Mapping[str, str]) -> str:
    """Apply every substitution, then remove what is left of ``##user_data_...##``."""
    for pattern, value in values.items():
        template = template.replace(pattern, value)
    return LEFTOVER.sub("", template)


def jinja_context(ctx: MachineContext, mt: MachinetypeConfig, options: Mapping[str, str]) -> dict[str, Any]:
    """The names a jinja2 template may use."""
    context: dict[str, Any] = {
        "space": ctx.space, "site": ctx.site, "machinetype": ctx.machinetype, "machine": ctx.machine,
        "manager": ctx.manager, "manager_version": __version__, "processors": ctx.processors,
        "memory_mb": ctx.processors * mt.mb_per_processor,
        "shutdown_time": int(ctx.shutdown_at.timestamp()), "request_id": ctx.request_id,
        "root_image": mt.root_image or "", "options": dict(options), "script": ctx.script, **ctx.urls,
    }
    if ctx.token is not None:
        context["token"] = ctx.token
    context["pilot_stamp"], context["pilot_wrapper"] = ctx.pilot_stamp, ctx.pilot_wrapper
    return context


@functools.lru_cache(maxsize=128)
def _compiled(text: str) -> jinja2.Template:
    """A template compiled once (compiling costs far more than rendering)."""
    return _JINJA.from_string(text)


def render_part(template: Template, ctx: MachineContext, mt: MachinetypeConfig, options: Mapping[str, str]) -> str:
    if not template.is_jinja:
        values = {**substitutions(ctx, mt), **{f"##user_data_option_{k}##": v for k, v in options.items()},
                  **{f"##user_data_file_{k}##": v for k, v in options.items()}}
        return render_old_style(template.text, values)
    try:
        return _compiled(template.text).render(jinja_context(ctx, mt, options))
    except jinja2.UndefinedError as exc:
        raise RenderError(f"template {template.source}: {exc.message}") from exc
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" line {line}" if line else ""
        raise RenderError(f"template {template.source}{where}: {exc.message}") from exc


def render_user_data(space: SpaceConfig, mt: MachinetypeConfig, name: str, order: CreateOrder, request_id: str,
                     token: str | None = None, *, manager: str, fetcher: Fetcher | None = None) -> bytes:
    """The user-data of a new machine ``name`` of ``mt`` in ``space``."""
    ctx = MachineContext(space.name, mt.name, name, manager, space.site, order.processors, order.shutdown_at,
                         request_id, identity.machine_urls(space, name), token,
                         order.pilot.stamp if order.pilot else "", order.pilot.wrapper if order.pilot else "",
                         space.runs_script)
    options = option_values(mt)
    if mt.user_data_proxy:  # ##user_data_option_x509_proxy## and {{ options.x509_proxy }}
        options["x509_proxy"] = proxy_for(mt, order.shutdown_at)
    parts = [render_part(load(source, mt, fetcher), ctx, mt, options) for source in mt.user_data.split()]
    return combine(parts)

"""Vacuum pipes: machinetypes published by a VO as JSON, expanded into sections.

A ``[vacuum_pipe SPACE PREFIX]`` section names a pipe URL and a total
target_share. Each machinetype of the pipe (``suffix``, ``target_share``
and options) becomes ``[machinetype SPACE PREFIX-SUFFIX]``: options of the
site's own files win over the pipe section's, which win over the pipe's; the
total share is split in proportion to the pipe's shares. Options naming
local files are checked so that a pipe cannot point outside the
machinetype's directory, as the old vcycle did.

The pipe is read from a local path, a ``file://`` URL, or the cached copy at
``<state_dir>/spaces/SPACE/machinetypes/PREFIX/vacuum.pipe``, which
``fetch`` refreshes over http(s) with If-Modified-Since.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vcycle.core.options import REQUIRED, RawValue, key, number, text
from vcycle.errors import PipeError


@dataclass(frozen=True, slots=True, kw_only=True)
class PipeSection:
    """The keys of a ``[vacuum_pipe SPACE PREFIX]`` section (besides the machinetype keys it passes on)."""

    vacuum_pipe_url: str = key(text, REQUIRED, "the pipe: a path, a file:// or an http(s) URL")
    target_share: float = key(number(0.0), 0.0, "the share split over the pipe's machinetypes")

# Options a pipe may set (the old vcycle's list, less those without meaning here).
ACCEPTED = {
    "accounting_fqan", "backoff_seconds", "fizzle_seconds", "heartbeat_file", "heartbeat_seconds",
    "legacy_proxy", "max_processors", "max_wallclock_seconds", "min_processors", "root_image",
    "target_share", "user_data", "user_data_proxy",
}
IGNORED = {"machine_model", "suffix", "cache_seconds", "cvmfs_repositories", "image_signing_dn",
           "min_wallclock_seconds", "root_device", "scratch_device"}
SUPPORTED_MODELS = {"cernvm3", "vm-raw"}


def cache_path(state_dir: str, space: str, prefix: str) -> str:
    return os.path.join(state_dir, "spaces", space, "machinetypes", prefix, "vacuum.pipe")


def read(url: str, cached: str) -> dict[str, Any]:
    """The pipe document, from a local path, a file:// URL or the cached copy of an http(s) URL."""
    path = url[len("file://"):] if url.startswith("file://") else url
    if url.startswith(("http://", "https://")):
        path = cached
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except FileNotFoundError:
        raise PipeError(f"{path} not found" + (" (not fetched yet)" if path == cached else "")) from None
    except (OSError, ValueError) as exc:
        raise PipeError(f"{path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("machinetypes"), list):
        raise PipeError(f"{path}: not a vacuum pipe (no list of machinetypes)")
    return document


def fetch(url: str, cached: str, timeout_seconds: float = 30.0) -> bool:
    """Refresh the cached copy of an http(s) pipe; True if it changed. Raises PipeError."""
    request = urllib.request.Request(url, headers={"User-Agent": "vcycle"})
    if os.path.exists(cached):
        request.add_header("If-Modified-Since", email.utils.formatdate(os.path.getmtime(cached), usegmt=True))
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return False
        raise PipeError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PipeError(f"{url}: {exc}") from exc
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(cached))
    with os.fdopen(fd, "wb") as stream:
        stream.write(body)
    os.replace(temporary, cached)
    return True


def _refusal(option: str, value: str) -> str | None:
    """Why a pipe may not set ``option`` to ``value``, or None."""
    remote = value.startswith(("http://", "https://"))
    if (option.startswith("user_data_file_") or option == "heartbeat_file") and "/" in value:
        return "cannot contain a '/'"
    if option in ("user_data", "root_image") and "/../" in value:
        return "cannot contain '/../'"
    if option in ("user_data", "root_image") and "/" in value and not remote:
        return "cannot contain a '/' unless it is an http(s) URL"
    return None


def expand(document: Mapping[str, Any], section: Mapping[str, RawValue], origin: str,
           total_share: float) -> tuple[dict[str, dict[str, RawValue]], list[str]]:
    """Machinetype suffix -> raw options from one pipe, and warnings about what was skipped."""
    warnings: list[str] = []
    entries: list[tuple[str, Mapping[str, Any]]] = []
    for entry in document["machinetypes"]:
        suffix = str(entry.get("suffix", "")) if isinstance(entry, Mapping) else ""
        if not re.fullmatch(r"[a-z0-9-]+", suffix):
            warnings.append(f"a machinetype without a valid suffix ({suffix!r}) is skipped")
        elif "machine_model" in entry and str(entry["machine_model"]) not in SUPPORTED_MODELS:
            warnings.append(f"{suffix}: machine_model {entry['machine_model']} is not supported; skipped")
        else:
            entries.append((suffix, entry))
    # Only the machinetypes that are created share the pipe's total.
    pipe_total = sum(_share(e) for _, e in entries)
    result: dict[str, dict[str, RawValue]] = {}
    for suffix, entry in entries:
        raw = {k: v for k, v in section.items() if k not in ("vacuum_pipe_url", "target_share")}
        for option, value in entry.items():
            key, text = str(option), str(value)
            if key in raw or key in IGNORED:
                continue
            if key == "target_share":
                share = total_share * _share(entry) / pipe_total if pipe_total > 0 else 0.0
                raw[key] = RawValue(repr(share), origin)
                continue
            if key not in ACCEPTED and not key.startswith(("user_data_option_", "user_data_file_")):
                warnings.append(f"{suffix}: option {key} is not accepted from a vacuum pipe; ignored")
                continue
            why = _refusal(key, text)
            if why is not None:
                warnings.append(f"{suffix}: option {key} {why}; ignored")
                continue
            raw[key] = RawValue(text, origin)
        result[suffix] = raw
    return result, warnings


def _share(entry: Mapping[str, Any]) -> float:
    try:
        return max(0.0, float(entry.get("target_share", 0.0)))
    except (TypeError, ValueError):
        return 0.0

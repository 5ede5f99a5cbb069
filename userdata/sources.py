"""Where templates come from: a path, an http(s) URL, or the templates shipped here.

Relative paths resolve in the machinetype's ``files`` directory, as in the
original vcycle. URLs are fetched with a timeout and cached on disk; the
cached copy is re-validated with If-Modified-Since at most every
``REVALIDATE_SECONDS``. When a fetch fails the cached copy is used and a
warning says so; without a cached copy the machinetype gets no machines
this cycle (RenderError).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources

from vcycle.core.sections import MachinetypeConfig
from vcycle.errors import RenderError

log = logging.getLogger(__name__)
REVALIDATE_SECONDS = 60.0
FETCH_TIMEOUT_SECONDS = 20.0
MAX_TEMPLATE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Template:
    """One template's text and where it came from (its name decides jinja2 or old-style)."""

    source: str
    text: str

    @property
    def is_jinja(self) -> bool:
        return self.source.split("?", 1)[0].endswith(".j2")


def template_cache(state_dir: str) -> str:
    """Where fetched templates are kept."""
    return os.path.join(state_dir, "cache", "user_data")


def files_directory(mt: MachinetypeConfig) -> str:
    return os.path.join(mt.directory, "files")


def resolve(path: str, mt: MachinetypeConfig) -> str:
    """An absolute path as given; a relative one inside the machinetype's files directory."""
    return path if os.path.isabs(path) else os.path.join(files_directory(mt), path)


@functools.lru_cache(maxsize=256)
def _read_cached(path: str, mtime_ns: int) -> str:
    with open(path, encoding="utf-8") as stream:
        return stream.read()


@functools.lru_cache(maxsize=64)
def shipped(name: str) -> Template | None:
    """A template shipped with vcycle, by name, with or without its ``.j2`` (or None)."""
    if "/" in name or name.startswith("."):
        return None
    for candidate in (name, name + ".j2"):
        found = resources.files("vcycle.userdata").joinpath("templates", candidate)
        if found.is_file():
            return Template(candidate, found.read_text(encoding="utf-8"))
    return None


def read_local(source: str, mt: MachinetypeConfig) -> str:
    local = resolve(source, mt)
    try:
        return _read_cached(local, os.stat(local).st_mtime_ns)
    except FileNotFoundError:
        raise RenderError(f"user_data {source!r}: no such file {local} and no shipped template of that name") \
            from None
    except OSError as exc:
        raise RenderError(f"user_data {local}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise RenderError(f"user_data {local}: not UTF-8 text") from None


class Fetcher:
    """Fetches and caches http(s) templates under ``cache_dir``; safe to share between threads."""

    def __init__(self, cache_dir: str, timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
                 revalidate_seconds: float = REVALIDATE_SECONDS) -> None:
        self.cache_dir = cache_dir
        self.timeout_seconds = timeout_seconds
        self.revalidate_seconds = revalidate_seconds
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()

    def path(self, url: str) -> str:
        return os.path.join(self.cache_dir, hashlib.sha256(url.encode()).hexdigest())

    def get(self, url: str) -> str:
        cached = self.path(url)
        with self._lock:
            due = time.monotonic() - self._checked.get(url, -1e9) >= self.revalidate_seconds
            if due:
                self._checked[url] = time.monotonic()
        if due or not os.path.exists(cached):
            try:
                self._fetch(url, cached)
            except RenderError as exc:
                if not os.path.exists(cached):
                    raise
                log.warning("user_data %s: using the cached copy: %s", url, exc)
        with open(cached, encoding="utf-8", errors="replace") as stream:
            return stream.read()

    def _fetch(self, url: str, cached: str) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "vcycle"})
        if os.path.exists(cached):
            request.add_header("If-Modified-Since", email.utils.formatdate(os.path.getmtime(cached), usegmt=True))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                body = response.read(MAX_TEMPLATE_BYTES + 1)
                modified = response.headers.get("Last-Modified")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return
            raise RenderError(f"user_data {url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RenderError(f"user_data {url}: {getattr(exc, 'reason', exc)}") from exc
        if len(body) > MAX_TEMPLATE_BYTES:
            raise RenderError(f"user_data {url}: larger than {MAX_TEMPLATE_BYTES} bytes")
        os.makedirs(self.cache_dir, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.cache_dir, prefix=".fetch-")
        with os.fdopen(fd, "wb") as stream:
            stream.write(body)
        if modified:
            stamp = email.utils.parsedate_to_datetime(modified).timestamp()
            os.utime(temporary, (stamp, stamp))
        os.replace(temporary, cached)


def load(source: str, mt: MachinetypeConfig, fetcher: Fetcher | None) -> Template:
    """The template named by one ``user_data`` entry."""
    if source.startswith(("http://", "https://")):
        if fetcher is None:
            raise RenderError(f"user_data {source}: no cache directory to fetch templates into")
        return Template(source, fetcher.get(source))
    if not os.path.isabs(source) and not os.path.exists(resolve(source, mt)):
        found = shipped(source)
        if found is not None:
            return found
    return Template(source, read_local(source, mt))

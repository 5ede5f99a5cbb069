"""The files machines upload into their joboutputs: names, limits, atomic writes, clean-up.

Files live in ``joboutputs_dir/SPACE/MACHINE/NAME``. A name is a plain file
name from a safe set (letters, digits, ``.``, ``_``, ``-``; not starting with
a dot, so no ``..`` and no hidden files). A file is written to a hidden
temporary file next to it and renamed into place, so a reader sees the old
file or the new one, never half of one; a full disk leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection

from vcycle.errors import JoboutputsError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a space or machine name in a path


def check_name(name: str) -> str:
    if not SAFE_NAME.fullmatch(name):
        raise JoboutputsError(400, f"file name {name[:80]!r} not allowed: use letters, digits, '.', '_' and '-', "
                                   "not starting with '.', at most 128 characters")
    return name


class Joboutputs:
    """One directory tree of joboutputs, with per-file and per-machine size limits."""

    def __init__(self, root: str, max_file_bytes: int, max_machine_bytes: int) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_machine_bytes = max_machine_bytes

    def directory(self, space: str, machine: str) -> str:
        for part in (space, machine):
            if not SAFE_PART.fullmatch(part):
                raise JoboutputsError(400, f"{part[:80]!r} is not a space or machine name")
        return os.path.join(self.root, space, machine)

    def write(self, space: str, machine: str, name: str, data: bytes, *, durable: bool = True) -> None:
        """Keep ``data`` as the machine's file ``name``, replacing any earlier one, atomically."""
        check_name(name)
        if len(data) > self.max_file_bytes:
            raise JoboutputsError(413, f"{name} is {len(data)} bytes; at most {self.max_file_bytes} are kept")
        directory = self.directory(space, machine)
        used = self._used(directory, but=name)
        if used + len(data) > self.max_machine_bytes:
            raise JoboutputsError(413, f"{machine} already keeps {used} bytes of joboutputs; "
                                       f"at most {self.max_machine_bytes} in all")
        try:
            os.makedirs(directory, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".upload-", dir=directory)
        except OSError as exc:
            raise _storage_error(exc) from exc
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                if durable:
                    stream.flush()
                    os.fsync(stream.fileno())
            os.chmod(temporary, 0o640)
            os.replace(temporary, os.path.join(directory, name))
        except OSError as exc:
            _remove(temporary)
            raise _storage_error(exc) from exc

    def read(self, space: str, machine: str, name: str) -> bytes | None:
        check_name(name)
        try:
            with open(os.path.join(self.directory(space, machine), name), "rb") as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def names(self, space: str, machine: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.directory(space, machine))
                          if e.is_file() and SAFE_NAME.fullmatch(e.name))
        except FileNotFoundError:
            return []

    def _used(self, directory: str, but: str) -> int:
        try:
            return sum(e.stat().st_size for e in os.scandir(directory) if e.is_file() and e.name != but)
        except FileNotFoundError:
            return 0

    def cleanup(self, live: Collection[tuple[str, str]], keep_seconds: Callable[[str], float], now: float) -> int:
        """Remove the directories of machines not in ``live`` untouched for their space's keep time."""
        removed = 0
        try:
            spaces = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for space in spaces:
            if not space.is_dir():
                continue
            for machine in os.scandir(space.path):
                if (space.name, machine.name) in live or not machine.is_dir():
                    continue
                if now - machine.stat().st_mtime > keep_seconds(space.name):
                    shutil.rmtree(machine.path, ignore_errors=True)
                    removed += 1
        return removed


def _storage_error(exc: OSError) -> JoboutputsError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return JoboutputsError(507, "no space left for joboutputs on the server; nothing was kept")
    return JoboutputsError(503, f"cannot keep joboutputs now: {exc.strerror}; nothing was kept")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

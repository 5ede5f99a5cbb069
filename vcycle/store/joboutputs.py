"""The files machines upload into their joboutputs: names, limits, where they are kept, clean-up.

A machine's files are kept on one of two shelves. ``Files``: the directory
tree ``joboutputs_dir/SPACE/MACHINE/NAME`` on this host, as the old vcycle
kept them; a file is written to a hidden temporary file next to it and
renamed into place, so a reader sees the old file or the new one, never half
of one, and a full disk leaves nothing behind. ``Rows``: the store's
joboutputs table (``joboutputs_in_store``), so that endpoints on several
hosts sharing one PostgreSQL store keep and serve the same files whichever
host a machine talks to; a file is one row, replaced in one transaction.

A name is a plain file name from a safe set (letters, digits, ``.``, ``_``,
``-``; not starting with a dot, so no ``..`` and no hidden files).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from sqlalchemy import Connection, delete, func, select

from vcycle.core.sections import Settings
from vcycle.errors import JoboutputsError, StoreError
from vcycle.store import schema
from vcycle.store.sql import Store, _dialect_insert

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a space or machine name in a path
J = schema.joboutputs


def check_name(name: str) -> str:
    if not SAFE_NAME.fullmatch(name):
        raise JoboutputsError(400, f"file name {name[:80]!r} not allowed: use letters, digits, '.', '_' and '-', "
                                   "not starting with '.', at most 128 characters")
    return name


def check_part(part: str) -> str:
    if not SAFE_PART.fullmatch(part):
        raise JoboutputsError(400, f"{part[:80]!r} is not a space or machine name")
    return part


class Shelf(Protocol):
    """Where joboutputs are kept; names are checked before they get here."""

    def used(self, space: str, machine: str, but: str) -> int: ...

    def put(self, space: str, machine: str, name: str, data: bytes, durable: bool) -> None: ...

    def get(self, space: str, machine: str, name: str) -> bytes | None: ...

    def sizes(self, space: str, machine: str) -> list[tuple[str, int]]: ...

    def cleanup(self, live: Collection[tuple[str, str]], keep_seconds: Callable[[str], float], now: float) -> int: ...


class Joboutputs:
    """Machines' joboutputs on one shelf, with per-file and per-machine size limits."""

    def __init__(self, shelf: Shelf, max_file_bytes: int, max_machine_bytes: int) -> None:
        self.shelf = shelf
        self.max_file_bytes = max_file_bytes
        self.max_machine_bytes = max_machine_bytes

    def write(self, space: str, machine: str, name: str, data: bytes, *, durable: bool = True) -> None:
        """Keep ``data`` as the machine's file ``name``, replacing any earlier one, atomically."""
        check_name(name), check_part(space), check_part(machine)
        if len(data) > self.max_file_bytes:
            raise JoboutputsError(413, f"{name} is {len(data)} bytes; at most {self.max_file_bytes} are kept")
        used = self.shelf.used(space, machine, name)
        if used + len(data) > self.max_machine_bytes:
            raise JoboutputsError(413, f"{machine} already keeps {used} bytes of joboutputs; "
                                       f"at most {self.max_machine_bytes} in all")
        self.shelf.put(space, machine, name, data, durable)

    def read(self, space: str, machine: str, name: str) -> bytes | None:
        return self.shelf.get(check_part(space), check_part(machine), check_name(name))

    def sizes(self, space: str, machine: str) -> list[tuple[str, int]]:
        """(name, bytes) of each of the machine's files, by name."""
        return self.shelf.sizes(check_part(space), check_part(machine))

    def names(self, space: str, machine: str) -> list[str]:
        return [name for name, _ in self.sizes(space, machine)]

    def cleanup(self, live: Collection[tuple[str, str]], keep_seconds: Callable[[str], float], now: float) -> int:
        """Remove the files of machines not in ``live`` untouched for their space's keep time; how many machines."""
        return self.shelf.cleanup(live, keep_seconds, now)


class Files:
    """Joboutputs as files under ``root`` on this host."""

    def __init__(self, root: str) -> None:
        self.root = root

    def directory(self, space: str, machine: str) -> str:
        return os.path.join(self.root, space, machine)

    def used(self, space: str, machine: str, but: str) -> int:
        return sum(size for name, size in self.sizes(space, machine) if name != but)

    def put(self, space: str, machine: str, name: str, data: bytes, durable: bool) -> None:
        directory = self.directory(space, machine)
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

    def get(self, space: str, machine: str, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.directory(space, machine), name), "rb") as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def sizes(self, space: str, machine: str) -> list[tuple[str, int]]:
        try:
            entries = list(os.scandir(self.directory(space, machine)))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            try:
                if entry.is_file() and SAFE_NAME.fullmatch(entry.name):
                    found.append((entry.name, entry.stat().st_size))
            except FileNotFoundError:  # replaced or cleaned up meanwhile
                continue
        return sorted(found)

    def cleanup(self, live: Collection[tuple[str, str]], keep_seconds: Callable[[str], float], now: float) -> int:
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


class Rows:
    """Joboutputs as rows of the store's joboutputs table, shared by every host using the store."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def used(self, space: str, machine: str, but: str) -> int:
        query = select(func.coalesce(func.sum(J.c.bytes), 0)).where(
            J.c.space == space, J.c.machine == machine, J.c.name != but)
        return int(self._read(lambda c: c.execute(query).scalar_one()))

    def put(self, space: str, machine: str, name: str, data: bytes, durable: bool) -> None:
        row = {"space": space, "machine": machine, "name": name, "data": data, "bytes": len(data),
               "written_at": self.clock()}
        try:
            with self.store._begin(write=True) as c:
                insert_ = _dialect_insert(c, J).values(**row)
                c.execute(insert_.on_conflict_do_update(
                    index_elements=["space", "machine", "name"],
                    set_={"data": insert_.excluded.data, "bytes": insert_.excluded.bytes,
                          "written_at": insert_.excluded.written_at}))
        except StoreError as exc:
            raise JoboutputsError(503, "cannot keep joboutputs now: the state store refused the write; "
                                       "nothing was kept") from exc

    def get(self, space: str, machine: str, name: str) -> bytes | None:
        query = select(J.c.data).where(J.c.space == space, J.c.machine == machine, J.c.name == name)
        data = self._read(lambda c: c.execute(query).scalar_one_or_none())
        return None if data is None else bytes(data)

    def sizes(self, space: str, machine: str) -> list[tuple[str, int]]:
        query = select(J.c.name, J.c.bytes).where(J.c.space == space, J.c.machine == machine).order_by(J.c.name)
        return [(r.name, r.bytes) for r in self._read(lambda c: c.execute(query).all())]

    def cleanup(self, live: Collection[tuple[str, str]], keep_seconds: Callable[[str], float], now: float) -> int:
        query = select(J.c.space, J.c.machine, func.max(J.c.written_at).label("last")).group_by(J.c.space, J.c.machine)
        gone = [(r.space, r.machine) for r in self._read(lambda c: c.execute(query).all())
                if (r.space, r.machine) not in live and now - r.last > keep_seconds(r.space)]
        if gone:
            try:
                with self.store._begin(write=True) as c:
                    for space, machine in gone:
                        c.execute(delete(J).where(J.c.space == space, J.c.machine == machine))
            except StoreError as exc:
                raise JoboutputsError(503, "cannot clean joboutputs now: the state store refused the write") from exc
        return len(gone)

    def _read(self, query: Callable[[Connection], Any]) -> Any:
        try:
            with self.store._begin() as c:
                return query(c)
        except StoreError as exc:
            raise JoboutputsError(503, "cannot read joboutputs now: the state store did not answer") from exc


def joboutputs_of(settings: Settings, store: Store) -> Joboutputs:
    """The joboutputs ``settings`` ask for: in the store, or under joboutputs_dir."""
    shelf: Shelf = Rows(store) if settings.joboutputs_in_store else Files(settings.joboutputs_dir)
    return Joboutputs(shelf, settings.joboutputs_max_file_bytes, settings.joboutputs_max_machine_bytes)


def _storage_error(exc: OSError) -> JoboutputsError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return JoboutputsError(507, "no space left for joboutputs on the server; nothing was kept")
    return JoboutputsError(503, f"cannot keep joboutputs now: {exc.strerror}; nothing was kept")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

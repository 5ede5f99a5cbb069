"""Cloud API calls: bounded in time, and timed per operation for the cycle report and the endpoint's metrics.

``answer`` waits for a call running in the space's pool no longer than the
space's ``api_timeout_seconds``: a cloud that stops answering costs its own
space that long, says so in the log as soon as the call runs long (space and
cloud named), and never holds up the other spaces. The call goes on in its
thread until the SDK gives up; nothing waits for it any more.

``Timed`` wraps any connector (asking its ``guard``, where there is one, before every call) and
keeps, per operation, how many calls were
made and how long they took in all; the cycle takes (and resets) the sums
into its report, from which ``/metrics`` serves them, in this process or
another one reading the same store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Executor, Future, wait
from typing import Any, TypeVar

from vcycle.connectors.base import Connector
from vcycle.core.model import CloudMachine, LaunchSpec
from vcycle.errors import CloudUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)
LONG_SECONDS = 10.0  # a call running this long is said in the log, while the cycle still waits for it


def settle(calls: Collection[Future[Any]], *, space: str, api: str, what: str | Callable[[int], str],
           bound: float) -> tuple[set[Future[Any]], set[Future[Any]]]:
    """(done, late) of ``calls`` after waiting for them at most ``bound`` seconds, said in the log once they
    run long (``what`` names the call, or says how many of them are late)."""
    if all(call.done() for call in calls):  # answered already (a simulated cloud's calls run inline)
        return set(calls), set()
    first = min(LONG_SECONDS, bound)
    done, late = wait(calls, timeout=first)
    if late and first < bound:
        phrase = f"{what} has" if isinstance(what, str) else what(len(late))
        log.warning("space=%s api=%s %s not answered for %gs; waiting up to %gs (api_timeout_seconds)", space, api,
                    phrase, first, bound)
        done, late = wait(calls, timeout=bound - first)
    return done, late


def answer(call: Future[T], *, space: str, api: str, what: str | Callable[[], str], bound: float) -> T:
    """The answer of ``call``, waited for at most ``bound`` seconds (said in the log once it runs long);
    CloudUnavailable when it does not come in time. ``what`` names the call, or tells which part of it runs.

    One call is waited for on its own future (no waiter for a set of them is made)."""
    def named() -> str:
        return what if isinstance(what, str) else what()

    first = min(LONG_SECONDS, bound)
    try:
        return call.result(timeout=first)
    except TimeoutError:
        if call.done():  # the call's own error (a socket's timeout), not the wait's
            raise
    if first < bound:
        log.warning("space=%s api=%s %s has not answered for %gs; waiting up to %gs (api_timeout_seconds)",
                    space, api, named(), first, bound)
        try:
            return call.result(timeout=bound - first)
        except TimeoutError:
            if call.done():
                raise
    raise CloudUnavailable(f"{api} {named()} did not answer within {bound:g}s (api_timeout_seconds)")


class Inline(Executor):
    """Runs each call at once in the caller's thread: for a simulated cloud, whose calls take no real time, so
    that a simulation pays for no thread hand-offs and runs in one order."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future, as a pool would
            done.set_exception(exc)
        return done


class Timed:
    """A connector whose calls are counted and timed (failed calls too)."""

    def __init__(self, inner: Connector, guard: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.guard = guard  # asked before every call (a manager's lease of the space, vcycle/loop/leases.py)
        if guard is not None and hasattr(inner, "guard_requests"):
            inner.guard_requests(guard)  # and before each of its HTTP requests, where the connector can say
        self.api = inner.api
        self.max_user_data_bytes = inner.max_user_data_bytes
        self._lock = threading.Lock()
        self._sums: dict[str, tuple[int, float]] = {}

    def _timed(self, operation: str, call: Callable[[], T]) -> T:
        if self.guard is not None:
            self.guard()
        started = time.perf_counter()
        try:
            return call()
        finally:
            spent = time.perf_counter() - started
            with self._lock:
                count, total = self._sums.get(operation, (0, 0.0))
                self._sums[operation] = (count + 1, total + spent)

    def list_machines(self) -> list[CloudMachine]:
        return self._timed("list_machines", self.inner.list_machines)

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        made: CloudMachine = self._timed("create_machine", lambda: self.inner.create_machine(spec))
        return made

    def delete_machine(self, machine_id: str) -> None:
        self._timed("delete_machine", lambda: self.inner.delete_machine(machine_id))

    def capacity(self) -> int | None:
        quota: int | None = self._timed("capacity", self.inner.capacity)
        return quota

    def flavors(self) -> Mapping[str, int] | None:
        return self._timed("flavors", self.inner.flavors)

    def take(self) -> dict[str, tuple[int, float]]:
        """Calls and seconds per operation since the last take."""
        with self._lock:
            sums, self._sums = self._sums, {}
        return sums

    def __getattr__(self, name: str) -> Any:  # anything else a connector offers (prices, notices, tests)
        found = getattr(self.inner, name)
        if self.guard is None or not callable(found):
            return found
        guard = self.guard

        def guarded(*args: Any, **kwargs: Any) -> Any:
            guard()
            return found(*args, **kwargs)
        return guarded


def report_fields(sums: Mapping[str, tuple[int, float]]) -> tuple[dict[str, int], dict[str, float]]:
    """A take() as report counts (``api_OP_calls``) and timings (``api_OP_s``)."""
    counts = {f"api_{op}_calls": n for op, (n, _) in sorted(sums.items())}
    timings = {f"api_{op}_s": round(s, 6) for op, (_, s) in sorted(sums.items())}
    return counts, timings

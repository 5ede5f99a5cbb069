"""Heartbeats and shutdown messages from machines, written to the store in batches.

Each request only merges what it brings into a dictionary in memory (one
entry per machine: the latest heartbeat wins, a shutdown message is never
lost to a later heartbeat). A flusher thread writes the whole dictionary in
one transaction every ``heartbeat_flush_seconds``, so a flood of heartbeats
costs the store one write a second and cannot stall the cycle's own writes.
The content of each machinetype's heartbeat file is written to joboutputs
at the same time, once per machine per flush.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from vcycle.core.model import Heartbeat
from vcycle.errors import JoboutputsError, StoreError
from vcycle.store import Store
from vcycle.store.joboutputs import Joboutputs

log = logging.getLogger(__name__)


class HeartbeatBuffer:
    """What machines reported since the last flush, merged per machine."""

    def __init__(self, store: Store, joboutputs: Joboutputs | None = None, flush_seconds: float = 1.0) -> None:
        self.store = store
        self.joboutputs = joboutputs
        self.flush_seconds = flush_seconds
        self._beats: dict[tuple[str, str], Heartbeat] = {}
        self._files: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.flushed = 0  # heartbeats written, for metrics
        self.failures = 0

    def add(self, space: str, beat: Heartbeat, file: tuple[str, bytes] | None = None) -> None:
        key = (space, beat.machine)
        with self._lock:
            earlier = self._beats.get(key)
            if earlier is not None:
                beat = dataclasses.replace(earlier, **{f.name: getattr(beat, f.name)
                                                       for f in dataclasses.fields(beat)
                                                       if getattr(beat, f.name) is not None})
            self._beats[key] = beat
            if file is not None:
                self._files[(space, beat.machine, file[0])] = file[1]

    def pending(self) -> int:
        return len(self._beats)

    def flush(self) -> int:
        """Write what is pending; on a store failure it is kept for the next flush. How many were written."""
        with self._lock:
            beats, self._beats = self._beats, {}
            files, self._files = self._files, {}
        if beats:
            try:
                self.store.put_heartbeats([(space, beat) for (space, _), beat in beats.items()])
            except StoreError as exc:
                self.failures += 1
                log.warning("endpoint: %d heartbeat(s) not written yet, retrying: %s", len(beats), exc)
                with self._lock:
                    for key, beat in beats.items():
                        self._beats.setdefault(key, beat)
                    for fkey, data in files.items():
                        self._files.setdefault(fkey, data)
                return 0
        if self.joboutputs is not None:
            for (space, machine, name), data in files.items():
                try:
                    self.joboutputs.write(space, machine, name, data, durable=False)
                except JoboutputsError as exc:
                    log.warning("endpoint: heartbeat file %s of %s not kept: %s", name, machine, exc)
        self.flushed += len(beats)
        return len(beats)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vcycle-heartbeats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_seconds)
            self.flush()

    def stop(self) -> None:
        """Stop the flusher after a last flush."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

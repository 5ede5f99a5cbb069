"""``[demand NAME] type = file``: demand read from a JSON document on disk, re-read at every call.

Whatever writes the file (a cron job, a batch-system exporter, a test)
replaces it atomically; a missing or broken file makes demand unknown. The
document is the one vcycle/demand/document.py reads. With ``poll_seconds``,
the daemon reads it between cycles too, and a rise in idle jobs starts a
cycle at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from vcycle.core.model import Demand
from vcycle.core.options import REQUIRED, key, options_of, text
from vcycle.core.sections import DemandConfig
from vcycle.demand.base import DemandPlugin, SourceContext, poll_seconds
from vcycle.demand.document import parse_document
from vcycle.demand.watch import Watch
from vcycle.errors import DemandError


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSection:
    """The keys of a ``type = file`` section."""

    path: str = key(text, REQUIRED, "the JSON document of idle jobs per space and machinetype")
    poll_seconds: float = key(poll_seconds, 0.0, "also read it this often between cycles and start a cycle at once "
                              "when idle jobs rose; 0 = only at cycles")


class FileDemand:
    def __init__(self, name: str, path: str, poll: float = 0.0) -> None:
        self.name = name
        self.path = path
        self.watcher = Watch(name, poll, self._counts, "idle jobs") if poll else None

    def _document(self) -> dict[str, dict[str, Demand]]:
        try:
            with open(self.path, encoding="utf-8") as stream:
                document = json.load(stream)
        except OSError as exc:
            raise DemandError(f"demand {self.name}: cannot read {self.path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise DemandError(f"demand {self.name}: {self.path} is not valid JSON: {exc}") from exc
        return parse_document(document, self.path)

    def demand(self, space: str) -> dict[str, Demand]:
        if self.watcher is not None:
            self.watcher.start()  # from the first demand on, once the daemon asked to be woken
        return self._document().get(space, {})

    def _counts(self) -> dict[Hashable, int]:
        return {(space, mt): d.idle_jobs for space, found in self._document().items() for mt, d in found.items()}

    def watch(self, wake: Callable[[], None]) -> None:
        """With poll_seconds: read between cycles too and ``wake`` when idle jobs rose."""
        if self.watcher is not None:
            self.watcher.on_change = wake

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()


def make(config: DemandConfig, context: SourceContext) -> FileDemand:
    options = options_of(config.options, FileSection)
    return FileDemand(config.name, options.path, options.poll_seconds)


PLUGIN = DemandPlugin(make=make, section=FileSection)

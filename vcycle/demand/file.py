"""``[demand NAME] type = file``: demand read from a JSON document on disk, re-read at every call.

Whatever writes the file (a cron job, a batch-system exporter, a test)
replaces it atomically; a missing or broken file makes demand unknown. The
document is the one vcycle/demand/document.py reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vcycle.core.model import Demand
from vcycle.core.options import REQUIRED, key, options_of, text
from vcycle.core.sections import DemandConfig
from vcycle.demand.base import DemandPlugin, SourceContext
from vcycle.demand.document import parse_document
from vcycle.errors import DemandError


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSection:
    """The keys of a ``type = file`` section."""

    path: str = key(text, REQUIRED, "the JSON document of idle jobs per space and machinetype")


class FileDemand:
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path

    def demand(self, space: str) -> dict[str, Demand]:
        try:
            with open(self.path, encoding="utf-8") as stream:
                document = json.load(stream)
        except OSError as exc:
            raise DemandError(f"demand {self.name}: cannot read {self.path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise DemandError(f"demand {self.name}: {self.path} is not valid JSON: {exc}") from exc
        return parse_document(document, self.path).get(space, {})


def make(config: DemandConfig, context: SourceContext) -> FileDemand:
    return FileDemand(config.name, options_of(config.options, FileSection).path)


PLUGIN = DemandPlugin(make=make, section=FileSection)

"""Machines as supervised processes on this host: the options model.

The local connector itself arrives with the local-space issue.
"""

from __future__ import annotations

from vcycle.options import ApiOptions, Option, choice, options, text

OPTIONS = ApiOptions(
    space=options(
        Option("workdir", text, help="where machines' directories live; default under state_dir"),
        Option("isolation", choice("none", "bwrap"), "none"),
    ),
)

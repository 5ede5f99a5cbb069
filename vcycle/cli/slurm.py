"""``vcycle slurm-resume NODES`` and ``vcycle slurm-suspend NODES``: Slurm's ResumeProgram and SuspendProgram.

slurmctld runs them (as SlurmUser, with a hostlist such as ``cloud[1-3]``)
for the State=CLOUD nodes of slurm.conf that it powers up for jobs or powers
down when idle. They only write to vcycle's store and return at once: each
resumed node becomes a request for one machine of the machinetype whose
``slurm_cloud_nodes`` has it (a ``[demand NAME] type = slurm_cloud``
source), which vcycle's cycle creates under the space's limits, shares and
backoff and whose slurmd registers as that node; a suspended node's machine
is deleted by the next cycle. A node that cannot be served is set DOWN in
Slurm with the reason, as Slurm asks of these programs, and the command exits
1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from vcycle.core.sections import Config
from vcycle.demand.slurm import SlurmCloudSection, hostnames, resume, suspend
from vcycle.errors import CommandFailed, VcycleError
from vcycle.store import Store

EXIT_OK, EXIT_FAILED = 0, 1


def _down(config: Config | None, nodes: dict[str, str]) -> None:
    """Set these nodes DOWN in Slurm, each with its reason (SLURM_CONF from the slurm_cloud section, if given)."""
    conf = next((d.options.slurm_conf for d in (config.demands.values() if config else ())
                 if isinstance(d.options, SlurmCloudSection) and d.options.slurm_conf), None)
    env = {**os.environ, **({"SLURM_CONF": conf} if conf else {}),
           "PATH": os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    for node, why in sorted(nodes.items()):
        sys.stderr.write(f"{node}: {why}: set down in Slurm\n")
        try:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", f"reason=vcycle: {why}"[:200]],
                           env=env, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            sys.stderr.write(f"{node}: not set down: {exc}\n")


def power(args: argparse.Namespace, load: Callable[[argparse.Namespace], Config],
          open_store: Callable[[Config], Store]) -> int:
    """Run slurm-resume (``args.resume``) or slurm-suspend for ``args.nodes``."""
    try:
        nodes = hostnames(args.nodes)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_FAILED
    config = None
    try:
        config = load(args)
        store = open_store(config)
        act = resume if args.resume else suspend
        problems = act(config, store, nodes, datetime.now(UTC))
    except (VcycleError, OSError) as exc:
        why = ("its configuration or store cannot be used (vcycle check-config)" if isinstance(exc, CommandFailed)
               else str(exc))
        if args.resume:
            _down(config, dict.fromkeys(nodes, f"not resumed: {why}"))
        else:
            sys.stderr.write(f"not suspended: {why}\n")
        return exc.status if isinstance(exc, CommandFailed) else EXIT_FAILED
    if args.resume and problems:
        _down(config, problems)
    done = [n for n in nodes if n not in problems]
    verb = "asked for" if args.resume else "to be deleted"
    if done:
        print(f"{len(done)} node(s) {verb}: {', '.join(done)}")
    for node, why in sorted(problems.items()):
        if not args.resume:
            sys.stderr.write(f"{node}: {why}\n")
    return EXIT_FAILED if problems else EXIT_OK

"""Several managers on one PostgreSQL, killed, paused and stopped: how fast spaces change hands, and what leaks.

Three real `vcycle daemon` processes (tests/managers.py) share a private PostgreSQL (started here) and twenty EC2
spaces on a moto server of their own, with the leases at their defaults (lease_seconds 15, renew 5) unless told.
For ``--seconds`` (default 600) a random manager is SIGKILLed every few seconds at a random point of its cycle
and started again at once, ``--kills`` times in all (default 100); the leases are sampled every 100 ms. Then one
manager is SIGSTOPped past its lease and resumed, and ``--handoffs`` times one is stopped with SIGTERM and
started again.

- ``takeover_s_*``: from a kill to every space the dead process held being held by another (a live lease of
  another process; the restarted one is another process);
- ``graceful_handoff_s``: the slowest, over the SIGTERMs, from the signal to its spaces held by others;
- ``double_creates``: machine names with more than one EC2 instance, ever (terminated ones too), at moto;
- ``fenced_calls``: cloud calls (counted at a proxy in front of moto) and store writes (counted by a trigger in
  PostgreSQL) made by a manager for a space it did not hold at that moment;
- also the limit breaches sampled at moto every second, the machines leaked at the end (live at moto with no
  live record), the longest time a space went without a live lease, and the samples taken.

    .venv/bin/python benchmarks/ha.py [--seconds 600] [--kills 100] [--lease 15] [--renew 5]

Ends with ``RESULT takeover_s_max=... takeover_s_median=... graceful_handoff_s=... double_creates=...
fenced_calls=...`` (goals: takeover within 2 x lease_seconds, handoff within 1 s, the counts 0).
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

import services  # noqa: E402
from ec2 import start_moto  # noqa: E402  (benchmarks/ec2.py: moto_server on a free loopback port)
from managers import Site  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--handoffs", type=int, default=5)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--renew", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="vcycle-ha-"))
    postgresql = services.postgresql(root / "postgresql")
    moto, url = start_moto()
    ec2 = boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    ami = ec2.describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"][0]["ImageId"]
    (root / "site").mkdir()
    site = Site(root / "site", postgresql.url, url, ami, lease=args.lease, renew=args.renew, cycle=5)
    takeovers: list[float] = []
    pending: list[threading.Thread] = []
    try:
        site.start()
        site.wait_for(site.settled, 120)
        site.sample_owners()
        site.sample_limits()
        gap = args.seconds / max(1, args.kills)
        for kill in range(args.kills):
            time.sleep(rng.uniform(0.5 * gap, 1.5 * gap))
            victim = site.pick(rng)
            assert victim.process is not None
            name_end = f":{victim.process.pid}"
            lost = [s for s, who in site.holders().items() if who.endswith(name_end)]
            killed = time.monotonic()
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            victim.start()

            def watch(lost: list[str] = lost, name_end: str = name_end, killed: float = killed) -> None:
                while time.monotonic() - killed < 4 * args.lease:
                    held = site.holders()
                    if all(s in held and not held[s].endswith(name_end) for s in lost):
                        takeovers.append(time.monotonic() - killed)
                        return
                    time.sleep(0.05)
                takeovers.append(float("inf"))
            thread = threading.Thread(target=watch, daemon=True)
            thread.start()
            pending.append(thread)
            print(f"kill {kill + 1}: {victim.label} held {len(lost)} space(s)", flush=True)
        for thread in pending:
            thread.join()
        site.wait_for(site.settled, 4 * args.lease)
        paused = site.pick(rng)
        paused.signal(signal.SIGSTOP)
        time.sleep(args.lease + 3)
        paused.signal(signal.SIGCONT)
        time.sleep(2 * args.lease)
        handoffs = []
        for _ in range(args.handoffs):
            site.wait_for(site.settled, 4 * args.lease)
            time.sleep(2 * args.renew)
            leaving = site.pick(rng)
            assert leaving.process is not None
            name_end = f":{leaving.process.pid}"
            held = [s for s, who in site.holders().items() if who.endswith(name_end)]
            signalled = time.time()
            leaving.signal(signal.SIGTERM)
            handoffs.append(site.wait_for(lambda end=name_end, held=held: all(
                s in h and not h[s].endswith(end) for h in [site.holders()] for s in held), 30, 0.02))
            taken = {c[0]: round(c[5] - signalled, 2) for c in site.claims() if c[0] in held and c[5] >= signalled}
            print(f"handoff {handoffs[-1]:.2f}s by {leaving.label}: each space claimed after (s) "
                  f"{dict(sorted(taken.items(), key=lambda i: i[1]))}", flush=True)
            leaving.wait(60)
            leaving.start()
        site.wait_for(site.settled, 4 * args.lease)
        time.sleep(3 * 5)  # a few cycles: every request given up or adopted
        leaked = site.leaked()
        calls, writes = site.fenced()
        claims = site.claims()
        why = [f"fenced call: {action} by {who} to {space} at {at:.3f}; claims of the space within a minute "
               f"(seconds after the call, holder, epoch): "
               f"{[(round(c[5] - at, 3), c[2], c[1]) for c in claims if c[0] == space and abs(c[5] - at) < 60]}"
               for at, who, space, action in calls]  # each fenced call with what may explain it
        doubles = site.double_creates()
    finally:
        site.close()
        moto.terminate()
        postgresql.stop()
    print(f"kills {len(takeovers)}, takeovers: median {statistics.median(takeovers):.2f}s max {max(takeovers):.2f}s; "
          f"handoffs {' '.join(f'{h:.2f}' for h in handoffs)}s; samples {site.samples}, longest without a lease "
          f"{site.longest_gap:.2f}s; cloud calls {len(site.proxy.calls)}; fenced calls {len(calls)} writes "
          f"{len(writes)}; limit breaches {site.breaches}; leaked {len(leaked)}")
    for line in why:
        print(line)
    print(f"RESULT takeover_s_max={max(takeovers):.2f} takeover_s_median={statistics.median(takeovers):.2f} "
          f"graceful_handoff_s={max(handoffs):.2f} double_creates={doubles} fenced_calls={len(calls) + len(writes)} "
          f"breaches={site.breaches} leaked={len(leaked)} longest_gap_s={site.longest_gap:.2f} "
          f"samples={site.samples}")


if __name__ == "__main__":
    main()

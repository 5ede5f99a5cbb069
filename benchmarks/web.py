"""Heartbeat PUTs over TLS with keep-alive: vcycle's endpoint, next to nginx serving a static file.

Set-up: a SQLite store holding 1,000 live machines, each with its own token;
``vcycle serve`` in its own process on a free loopback port, with a
certificate made here. The load generator is wrk (Debian's package), one
thread, keep-alive connections; its Lua script cycles through the machines,
each request a PUT of the machinetype's heartbeat file with that machine's
bearer token (so every request is authenticated and counted).

1. Throughput: as fast as wrk can, 32 connections, for --seconds.
2. Latency at about 1,000 requests/s: 11 connections, each waiting 10 ms between requests;
   wrk's own latency distribution gives p99.
3. nginx (Debian's package) serving a 16-byte static file over TLS with the
   same certificate, same wrk settings as 1.

Afterwards the store is checked: every machine's heartbeat arrived.

    .venv/bin/python benchmarks/web.py [--seconds 10] [--machines 1000]

Ends with ``RESULT heartbeats_per_s=... p99_ms=... nginx_ratio=...`` where
nginx_ratio = heartbeats_per_s / nginx's requests per second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from vcycle.config import load_config
from vcycle.core import mjf
from vcycle.core.identity import new_identity
from vcycle.core.model import new_record
from vcycle.core.states import MachineState
from vcycle.loop.launch import entropy
from vcycle.store import Store
from vcycle.testing import free_port, make_server_pki


def wait_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {seconds:.0f}s")


LUA = """
machines = {%s}
counter = 0
request = function()
    counter = counter + 1
    local m = machines[(counter %% #machines) + 1]
    return wrk.format("PUT", "/machines/bench/" .. m[1] .. "/joboutputs/vm-heartbeat",
                      {["Authorization"] = "Bearer " .. m[2]}, "1767268800\\n")
end
%s
done = function(summary, latency, requests)
    io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"p99_us\\": %%f, \\"errors\\": %%d, " ..
        "\\"non2xx\\": %%d}\\n", summary.requests, summary.duration / 1e6, latency:percentile(99),
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        summary.errors.status))
end
"""


def wrk(url: str, script: str | None, connections: int, seconds: int) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", script]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    found = re.search(r"^JSON (.*)$", done.stdout, re.M)
    if found:
        return dict(json.loads(found.group(1)))
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    return {"requests": rate * seconds, "seconds": float(seconds), "p99_us": 0.0, "errors": 0, "non2xx": 0}


def nginx_rate(directory: str, cert: str, key: str, seconds: int) -> float:
    port = free_port()
    root = os.path.join(directory, "www")
    os.makedirs(root)
    with open(os.path.join(root, "heartbeat"), "w") as stream:
        stream.write("1767268800 hello\n")
    conf = os.path.join(directory, "nginx.conf")
    with open(conf, "w") as stream:
        stream.write(f"""worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {directory}/nginx-body;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
""")
    server = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        result = wrk(f"https://127.0.0.1:{port}/heartbeat", None, 32, seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return result["requests"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--machines", type=int, default=1000)
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"this benchmark needs {' and '.join(missing)} (Debian: apt-get install wrk nginx)")
    directory = tempfile.mkdtemp(prefix="vcycle-bench-web-")
    make_server_pki(directory)
    cert, key = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    port = free_port()
    conf = os.path.join(directory, "vcycle.conf")
    with open(conf, "w") as stream:
        stream.write(f"""[settings]
state_url = sqlite:///{directory}/state.db
state_dir = {directory}
https_listen = 127.0.0.1:{port}
https_cert = {cert}
https_key = {key}
machine_requests_per_minute = 1000000
[space bench]
api = fake
[machinetype bench pilot]
user_data = pilot-container
heartbeat_file = vm-heartbeat
target_share = 1
backoff_seconds = 60
fizzle_seconds = 60
""")
    config = load_config([conf])
    mt = config.spaces["bench"].machinetypes["pilot"]
    store = Store.open(config.settings.state_url)
    now = dt.datetime.now(dt.UTC)
    machines, records = [], []
    for n in range(args.machines):
        who = new_identity("mt", entropy())
        token, token_hash = who.token, who.token_hash
        name = f"pilot-{n:05d}"
        machines.append((name, token))
        records.append(new_record(name=name, space="bench", machinetype="pilot", state=MachineState.RUNNING,
                                  processors=1, now=now, request_id=f"r{n}", reason="benchmark", manager="bench",
                                  token_hash=token_hash, features=json.dumps(mjf.features(mt, 1, now, now, None))))
    store.write("bench", store.load("bench").version, records)
    store.close()
    print(f"{args.machines} machines in {config.settings.state_url}")

    def script(pace: str) -> str:
        path = os.path.join(directory, f"put-{len(pace)}.lua")
        with open(path, "w") as stream:
            stream.write(LUA % (",".join(f'{{"{n}","{t}"}}' for n, t in machines), pace))
        return path

    server = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "serve", "--config", conf],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(directory, "serve.log"), "w"))
    try:
        wait_port(port)
        url = f"https://127.0.0.1:{port}/"
        wrk(url, script(""), 32, 2)  # warm-up
        full = wrk(url, script(""), 32, args.seconds)
        rate = full["requests"] / full["seconds"]
        print(f"throughput: {full['requests']:.0f} heartbeats in {full['seconds']:.1f}s = {rate:.0f}/s, "
              f"{full['non2xx']:.0f} not 2xx, {full['errors']:.0f} socket errors")
        paced = wrk(url, script("delay = function() return 10 end"), 11, args.seconds)
        p99 = paced["p99_us"] / 1000.0
        print(f"at {paced['requests'] / paced['seconds']:.0f} requests/s: p99 {p99:.1f} ms, "
              f"{paced['non2xx']:.0f} not 2xx")
        time.sleep(2)  # a last flush
    finally:
        server.terminate()
        server.wait(timeout=60)
    beats = Store.open(config.settings.state_url).heartbeats("bench")
    print(f"heartbeats in the store afterwards: {len(beats)} of {args.machines} machines")
    if len(beats) != args.machines or full["non2xx"] or paced["non2xx"]:
        raise SystemExit("not every heartbeat was accepted and stored")
    nginx = nginx_rate(directory, cert, key, args.seconds)
    print(f"nginx static file over TLS: {nginx:.0f} requests/s")
    shutil.rmtree(directory, ignore_errors=True)
    print(f"RESULT heartbeats_per_s={rate:.0f} p99_ms={p99:.1f} nginx_ratio={rate / nginx:.3f}")


if __name__ == "__main__":
    main()

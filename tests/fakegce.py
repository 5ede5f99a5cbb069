"""A stateful fake of Google Compute Engine's v1 API and of Google's OAuth token endpoint, over plain HTTP on
loopback, for the libcloud connector's GCE tests.

libcloud's own GCE driver talks to it unmodified (its ``host``, ``port`` and ``secure`` arguments point both
its API and its OAuth connections here): a service account's JWT (RS256, signed with the key of the JSON key
file libcloud reads) is checked against that account's public key and exchanged for a bearer token, which every
API call must carry. The API answers as Compute Engine does: instances insert (an Operation, PENDING, RUNNING,
then DONE after ``op_seconds`` whether or not anyone asks: the instance PROVISIONING, STAGING, RUNNING; or DONE
with an ``error`` such as ZONE_RESOURCE_POOL_EXHAUSTED and no instance), get, list, the aggregated list (with a
``filter`` on labels), delete (STOPPING, then gone), zone operations, zones, regions with their quotas (CPUS,
PREEMPTIBLE_CPUS, counted from the instances), machine types; an insert over the CPUS quota is refused at once
(403 quotaExceeded); a ``requestId`` already seen returns its first Operation. Spot instances with
``instanceTerminationAction: DELETE`` are deleted when preempted (``preempt``), others TERMINATED.

Every exchange is recorded (``exchanges``) for tests/connectors/test_libcloud_gce.py, which validates each
request and response body against the Compute v1 discovery document google-api-python-client ships.

Not modelled: IAM, networks (a network or subnetwork URL is taken as it is), disks beyond the boot disk's name,
images (any sourceImage is taken), instance updates.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# machine type -> (vCPUs, memory MB)
MACHINE_TYPES = {"e2-small": (2, 2048), "e2-standard-2": (2, 8192), "e2-standard-4": (4, 16384),
                 "n2-standard-8": (8, 32768)}
ZONES = {"europe-west4-a": "europe-west4", "europe-west4-b": "europe-west4", "us-central1-a": "us-central1"}
API = "/compute/v1/projects/"


def stamp() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")


class GceError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}}


class Gce:
    """The fake's state and server; ``start()`` serves it in a thread of this process."""

    def __init__(self, directory: Path, *, project: str = "vcycle-test", op_seconds: float = 0.3,
                 cpus: int = 24, preemptible_cpus: int = 24) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.project = project
        self.op_seconds = op_seconds
        self.quota = {"CPUS": cpus, "PREEMPTIBLE_CPUS": preemptible_cpus}
        self.lock = threading.RLock()
        self.instances: dict[str, dict[str, Any]] = {}  # name -> instance
        self.operations: dict[str, dict[str, Any]] = {}
        self.request_ids: dict[str, str] = {}  # requestId -> operation name
        self.faults: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.exchanges: list[dict[str, Any]] = []
        self.email = f"vcycle@{project}.iam.gserviceaccount.com"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        directory.mkdir(parents=True, exist_ok=True)
        self.key_file = directory / "service-account.json"
        self.key_file.write_text(json.dumps({
            "type": "service_account", "project_id": project, "private_key_id": uuid.uuid4().hex,
            "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
            "client_email": self.email, "client_id": "1234567890",
            "token_uri": "https://oauth2.googleapis.com/token"}))
        self.key_file.chmod(0o600)
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Gce:
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"gce": self}))
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="fake-gce", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def fault(self, method: str, path_contains: str, *, status: int = 0, reason: str = "", message: str = "",
              async_error: str = "", count: int = 1) -> None:
        with self.lock:
            self.faults.append({"method": method, "path": path_contains, "status": status, "reason": reason,
                                "message": message, "async_error": async_error, "count": count})

    def preempt(self, name: str) -> None:
        """Compute Engine takes a spot or preemptible instance back."""
        with self.lock:
            instance = self.instances[name]
            if instance["scheduling"].get("instanceTerminationAction") == "DELETE":
                del self.instances[name]
            else:
                instance["status"] = "TERMINATED"

    def settle(self) -> None:
        now = time.monotonic()
        for operation in self.operations.values():
            if operation["status"] != "DONE" and now - operation["_started"] >= self.op_seconds:
                self._finish(operation)
            elif operation["status"] == "PENDING":
                operation["status"] = "RUNNING"

    def _finish(self, operation: dict[str, Any]) -> None:
        operation.update(status="DONE", progress=100, endTime=stamp())
        name = operation["targetLink"].rsplit("/", 1)[1]
        instance = self.instances.get(name)
        if operation.get("_error"):
            operation["error"] = {"errors": [{"code": operation["_error"], "message": "The zone "
                                              f"'{operation['zone'].rsplit('/', 1)[1]}' does not have enough "
                                              "resources available to fulfill the request."}]}
            operation["httpErrorStatusCode"], operation["httpErrorMessage"] = 503, "SERVICE UNAVAILABLE"
            self.instances.pop(name, None)
        elif operation["operationType"] == "delete":
            self.instances.pop(name, None)
        elif instance is not None:
            instance["status"] = "RUNNING"

    def used(self, region: str) -> dict[str, int]:
        counts = {"CPUS": 0, "PREEMPTIBLE_CPUS": 0, "INSTANCES": 0}
        for instance in self.instances.values():
            if ZONES[instance["zone"].rsplit("/", 1)[1]] != region or instance["status"] == "TERMINATED":
                continue
            cpus = MACHINE_TYPES[instance["machineType"].rsplit("/", 1)[1]][0]
            scheduling = instance.get("scheduling") or {}
            spot = scheduling.get("preemptible") or scheduling.get("provisioningModel") == "SPOT"
            counts["PREEMPTIBLE_CPUS" if spot else "CPUS"] += cpus
            counts["INSTANCES"] += 1
        return counts


class _Handler(BaseHTTPRequestHandler):
    gce: Gce
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _reply(self, status: int, out: Any) -> None:
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.endswith("/oauth2/token"):
            return self._token(raw)
        gce = self.gce
        body = json.loads(raw) if raw else None
        try:
            with gce.lock:
                gce.settle()
                if self.headers.get("Authorization", "").removeprefix("Bearer ") not in gce.tokens:
                    raise GceError(401, "authError", "Request had invalid authentication credentials.")
                fault = next((f for f in gce.faults if f["method"] == method and f["path"] in url.path), None)
                if fault is not None:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        gce.faults.remove(fault)
                    if fault["status"]:
                        raise GceError(fault["status"], fault["reason"], fault["message"])
                status, out = self._route(method, url.path, query, body, fault)
        except GceError as error:
            status, out = error.status, error.body()
        self._reply(status, out)
        with gce.lock:
            gce.exchanges.append({"method": method, "path": url.path, "query": query, "request": body,
                                  "status": status, "response": out})

    def _token(self, raw: bytes) -> None:
        """The JWT bearer grant: the assertion's RS256 signature checked with the service account's key."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
        from cryptography.hazmat.primitives.hashes import SHA256

        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        try:
            header, claims, signature = form["assertion"].split(".")
            self.gce.public_key.verify(base64.urlsafe_b64decode(signature + "=="), f"{header}.{claims}".encode(),
                                       PKCS1v15(), SHA256())
            claim = json.loads(base64.urlsafe_b64decode(claims + "=="))
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            assert claim["iss"] == self.gce.email and claim["exp"] > time.time()
        except (KeyError, ValueError, AssertionError, InvalidSignature):
            return self._reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self.gce.lock:
            self.gce.tokens.add(token)
        return self._reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    # --- the API -------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: Any,
               fault: dict[str, Any] | None) -> tuple[int, Any]:
        gce = self.gce
        if not path.startswith(API + gce.project + "/"):
            raise GceError(404, "notFound", f"The resource '{path}' was not found")
        rest = path[len(API + gce.project) + 1:]
        parts = rest.split("/")
        base = f"https://www.googleapis.com{API}{gce.project}"
        if method == "GET" and rest == "aggregated/instances":
            return 200, self._aggregated(query, base)
        if method == "GET" and parts[0] == "zones" and len(parts) == 2:
            return 200, self._zone(parts[1], base)
        if method == "GET" and rest == "zones":
            return 200, {"kind": "compute#zoneList", "id": f"projects/{gce.project}/zones",
                         "items": [self._zone(z, base) for z in ZONES], "selfLink": f"{base}/zones"}
        if method == "GET" and rest == "regions":
            return 200, {"kind": "compute#regionList", "id": f"projects/{gce.project}/regions",
                         "items": [self._region(r, base) for r in sorted(set(ZONES.values()))],
                         "selfLink": f"{base}/regions"}
        if method == "GET" and parts[0] == "regions" and len(parts) == 2:
            return 200, self._region(parts[1], base)
        if parts[0] == "zones" and len(parts) >= 3:
            return self._zoned(method, parts, query, body, fault, base)
        raise GceError(404, "notFound", f"The resource '{path}' was not found")

    def _zoned(self, method: str, parts: list[str], query: dict[str, str], body: Any, fault: dict[str, Any] | None,
               base: str) -> tuple[int, Any]:
        gce = self.gce
        zone = parts[1]
        if zone not in ZONES:
            raise GceError(404, "notFound", f"The resource 'projects/{gce.project}/zones/{zone}' was not found")
        if parts[2] == "machineTypes" and method == "GET":
            return 200, self._machine_types(zone, base, parts[3] if len(parts) > 3 else None)
        if parts[2] == "operations" and len(parts) == 4 and method == "GET":
            operation = gce.operations.get(parts[3])
            if operation is None:
                raise GceError(404, "notFound", f"The resource 'operations/{parts[3]}' was not found")
            return 200, self._public(operation)
        if parts[2] == "instances":
            return self._instances(method, zone, parts[3:], query, body, fault, base)
        raise GceError(404, "notFound", f"The resource '{'/'.join(parts)}' was not found")

    @staticmethod
    def _public(thing: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in thing.items() if not k.startswith("_")}

    def _zone(self, zone: str, base: str) -> dict[str, Any]:
        if zone not in ZONES:
            raise GceError(404, "notFound", f"The resource 'projects/{self.gce.project}/zones/{zone}' was not found")
        return {"kind": "compute#zone", "id": str(abs(hash(zone)) % 10**12), "creationTimestamp": stamp(),
                "name": zone, "description": zone, "status": "UP", "region": f"{base}/regions/{ZONES[zone]}",
                "selfLink": f"{base}/zones/{zone}", "availableCpuPlatforms": ["Intel Cascade Lake"],
                "supportsPzs": False}

    def _region(self, region: str, base: str) -> dict[str, Any]:
        if region not in ZONES.values():
            raise GceError(404, "notFound", f"The resource 'projects/{self.gce.project}/regions/{region}' was not "
                                            "found")
        used = self.gce.used(region)
        quotas = [{"metric": metric, "limit": float(limit), "usage": float(used[metric])}
                  for metric, limit in self.gce.quota.items()]
        quotas.append({"metric": "INSTANCES", "limit": 6000.0, "usage": float(used["INSTANCES"])})
        return {"kind": "compute#region", "id": str(abs(hash(region)) % 10**12), "creationTimestamp": stamp(),
                "name": region, "description": region, "status": "UP", "selfLink": f"{base}/regions/{region}",
                "zones": [f"{base}/zones/{z}" for z, r in ZONES.items() if r == region], "quotas": quotas}

    def _machine_types(self, zone: str, base: str, name: str | None) -> dict[str, Any]:
        def one(kind: str) -> dict[str, Any]:
            cpus, memory = MACHINE_TYPES[kind]
            return {"kind": "compute#machineType", "id": str(1000 + list(MACHINE_TYPES).index(kind)),
                    "creationTimestamp": stamp(), "name": kind, "description": f"{cpus} vCPUs, {memory} MB",
                    "guestCpus": cpus, "memoryMb": memory, "maximumPersistentDisks": 128,
                    "maximumPersistentDisksSizeGb": "263168", "zone": zone, "isSharedCpu": False,
                    "selfLink": f"{base}/zones/{zone}/machineTypes/{kind}"}

        if name is not None:
            if name not in MACHINE_TYPES:
                raise GceError(404, "notFound", f"The resource 'machineTypes/{name}' was not found")
            return one(name)
        return {"kind": "compute#machineTypeList", "id": f"projects/{self.gce.project}/zones/{zone}/machineTypes",
                "items": [one(k) for k in MACHINE_TYPES], "selfLink": f"{base}/zones/{zone}/machineTypes"}

    def _aggregated(self, query: dict[str, str], base: str) -> dict[str, Any]:
        wanted = re.fullmatch(r'labels\.([a-z0-9_-]+)\s*=\s*"?([a-z0-9_-]*)"?', query.get("filter", "").strip())
        scoped: dict[str, Any] = {f"zones/{z}": {"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "There are "
                                                             "no results for scope 'zones/" + z + "' on this page.",
                                                             "data": [{"key": "scope", "value": f"zones/{z}"}]}}
                                  for z in ZONES}
        for instance in self.gce.instances.values():
            if wanted and instance.get("labels", {}).get(wanted.group(1)) != wanted.group(2):
                continue
            scope = scoped[f"zones/{instance['zone'].rsplit('/', 1)[1]}"]
            scope.pop("warning", None)
            scope.setdefault("instances", []).append(self._public(instance))
        return {"kind": "compute#instanceAggregatedList", "id": f"projects/{self.gce.project}/aggregated/instances",
                "items": scoped, "selfLink": f"{base}/aggregated/instances"}

    def _operation(self, kind: str, zone: str, name: str, base: str, error: str = "") -> dict[str, Any]:
        number = str(uuid.uuid4().int % 10**18)
        operation = {"kind": "compute#operation", "id": number, "name": f"operation-{uuid.uuid4().hex}",
                     "zone": f"{base}/zones/{zone}", "operationType": kind,
                     "targetLink": f"{base}/zones/{zone}/instances/{name}", "targetId": number, "status": "PENDING",
                     "user": self.gce.email, "progress": 0, "insertTime": stamp(), "startTime": stamp(),
                     "selfLink": "", "_started": time.monotonic(), "_error": error}
        operation["selfLink"] = f"{base}/zones/{zone}/operations/{operation['name']}"
        self.gce.operations[operation["name"]] = operation
        return operation

    def _instances(self, method: str, zone: str, rest: list[str], query: dict[str, str], body: Any,
                   fault: dict[str, Any] | None, base: str) -> tuple[int, Any]:
        gce = self.gce
        if method == "POST" and not rest:
            return self._insert(zone, query, body, fault, base)
        if not rest and method == "GET":
            items = [self._public(i) for i in gce.instances.values() if i["zone"].endswith(f"/{zone}")]
            return 200, {"kind": "compute#instanceList", "id": f"projects/{gce.project}/zones/{zone}/instances",
                         "items": items, "selfLink": f"{base}/zones/{zone}/instances"}
        instance = gce.instances.get(rest[0]) if rest else None
        if instance is None or not instance["zone"].endswith(f"/{zone}"):
            raise GceError(404, "notFound", f"The resource 'projects/{gce.project}/zones/{zone}/instances/"
                                            f"{rest[0] if rest else ''}' was not found")
        if method == "GET" and len(rest) == 1:
            return 200, self._public(instance)
        if method == "DELETE" and len(rest) == 1:
            instance["status"] = "STOPPING"
            return 200, self._public(self._operation("delete", zone, rest[0], base))
        raise GceError(400, "badRequest", "Invalid request.")

    def _insert(self, zone: str, query: dict[str, str], body: Any, fault: dict[str, Any] | None,
                base: str) -> tuple[int, Any]:
        gce = self.gce
        if query.get("requestId") in gce.request_ids:  # a retried insert: the first one's operation
            return 200, self._public(gce.operations[gce.request_ids[query["requestId"]]])
        if not isinstance(body, dict) or not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", body.get("name", "")):
            raise GceError(400, "invalid", "Invalid value for field 'resource.name'. Must be a match of regex "
                                           "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        name = body["name"]
        if name in gce.instances:
            raise GceError(409, "alreadyExists", f"The resource 'projects/{gce.project}/zones/{zone}/instances/"
                                                 f"{name}' already exists")
        kind = body.get("machineType", "").rsplit("/", 1)[-1]
        if kind not in MACHINE_TYPES:
            raise GceError(400, "invalid", f"Invalid value for field 'resource.machineType': "
                                           f"'{body.get('machineType')}'. Machine type with name '{kind}' does not "
                                           f"exist in zone '{zone}'.")
        metadata = body.get("metadata", {}).get("items", [])
        if any(len(item.get("value", "").encode()) > 256 * 1024 for item in metadata) or \
                sum(len(item.get("value", "").encode()) + len(item["key"]) for item in metadata) > 512 * 1024:
            raise GceError(400, "invalid", "Metadata value exceeds the maximum allowed size.")
        scheduling = body.get("scheduling") or {}
        spot = scheduling.get("preemptible") or scheduling.get("provisioningModel") == "SPOT"
        metric = "PREEMPTIBLE_CPUS" if spot else "CPUS"
        region = ZONES[zone]
        if gce.used(region)[metric] + MACHINE_TYPES[kind][0] > gce.quota[metric]:
            raise GceError(403, "quotaExceeded", f"Quota '{metric}' exceeded.  Limit: {gce.quota[metric]:.1f} in "
                                                 f"region {region}.")
        number = str(uuid.uuid4().int % 10**19)
        disks = []
        for index, disk in enumerate(body.get("disks") or []):
            given = disk.get("initializeParams") or {}
            disks.append({"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                          "source": f"{base}/zones/{zone}/disks/{given.get('diskName') or name}",
                          "deviceName": disk.get("deviceName") or f"persistent-disk-{index}", "index": index,
                          "boot": bool(disk.get("boot")), "autoDelete": bool(disk.get("autoDelete")),
                          "interface": "SCSI", "diskSizeGb": str(given.get("diskSizeGb") or 10)})
        interfaces = [{"kind": "compute#networkInterface", "name": f"nic{i}",
                       "network": n.get("network") or f"{base}/global/networks/default",
                       **({"subnetwork": n["subnetwork"]} if n.get("subnetwork") else {}),
                       "networkIP": f"10.164.0.{len(gce.instances) % 250 + 2}", "fingerprint": "x5Q2Ws2hbxE="}
                      for i, n in enumerate(body.get("networkInterfaces") or [{}])]
        gce.instances[name] = {
            "kind": "compute#instance", "id": number, "creationTimestamp": stamp(), "name": name,
            "tags": {"fingerprint": "42WmSpB8rSM="}, "machineType": f"{base}/zones/{zone}/machineTypes/{kind}",
            "status": "PROVISIONING", "zone": f"{base}/zones/{zone}", "canIpForward": False,
            "networkInterfaces": interfaces, "disks": disks,
            "metadata": {"kind": "compute#metadata", "fingerprint": "5d3A9EB0ywc=", "items": metadata},
            "selfLink": f"{base}/zones/{zone}/instances/{name}",
            "scheduling": {"onHostMaintenance": "TERMINATE" if spot else "MIGRATE", "automaticRestart": not spot,
                           "preemptible": bool(scheduling.get("preemptible")), **scheduling},
            "labels": body.get("labels") or {}, "labelFingerprint": "42WmSpB8rSM=", "startRestricted": False,
            "deletionProtection": False, "fingerprint": "g0u9mdDk_PI="}
        operation = self._operation("insert", zone, name, base, (fault or {}).get("async_error", ""))
        operation["targetId"] = number
        if query.get("requestId"):
            gce.request_ids[query["requestId"]] = operation["name"]
        return 200, self._public(operation)


def serve(directory: Path, **options: Any) -> Iterator[Gce]:
    gce = Gce(directory, **options).start()
    try:
        yield gce
    finally:
        gce.stop()

"""A stateful fake of Azure Resource Manager and of Entra ID's token endpoint, over real TLS, for the Azure
connector's tests and benchmarks/azure.py.

No Azure compute emulator exists, so this is the peer: the real, unmodified azure-mgmt-compute,
azure-mgmt-network and azure-identity (MSAL underneath) talk to it as they talk to Azure. It speaks the ARM
protocol they read: api-version required, bearer tokens it issued itself (client-credentials grant on
``/{tenant}/oauth2/v2.0/token``, found through the tenant's OpenID configuration), 201/202 with
``Azure-AsyncOperation``, ``Location`` and ``Retry-After`` on long-running operations, ``nextLink`` paging, ARM's
JSON error bodies. It keeps virtual machines, NICs, public IPs and managed disks with ARM's rules that matter to a
connector: a VM's OS disk appears with it; NIC, disk and IP go with the VM when their ``deleteOption`` is Delete
and are left behind otherwise; an attached NIC or IP cannot be deleted; quota is counted per location (regional,
size family, low-priority vCPUs) and reported by the usages API; sizes come from the resource SKUs API with their
zones and restrictions; customData is base64 of at most 87,380 characters and never returned; operations finish
after ``op_seconds`` whether or not anyone polls (as on ARM), or fail then (an ``async_error`` fault: a Failed VM
is left, as AllocationFailed leaves one).

Faults are injected by ``Arm.fault(...)`` (or ``POST /_fake/faults`` when the fake runs as its own process:
``python tests/fakearm.py DIR``): an HTTP error with ARM's body and an optional Retry-After, or an asynchronous
failure of the operation a PUT starts. ``record=DIR`` writes every ARM exchange as an oav traffic file
(``liveRequest``/``liveResponse``, URLs rewritten to management.azure.com, the token redacted), which
tests/connectors/test_azure_wire.py checks against the SDKs' own wire models and against Microsoft's Compute
Swagger with oav.

What it does not do: RBAC, resource groups' lifecycle, virtual networks (a subnet id is taken as it is), VM
updates beyond tags, the network RP's operations (finished at once, as they nearly are on Azure). Its error
texts follow Azure's documented messages; they were not captured from a live subscription.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import ipaddress
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

# name -> (vCPUs, memory GB, quota family, zones offered)
SIZES: dict[str, tuple[int, float, str, tuple[str, ...]]] = {
    "Standard_B1s": (1, 1.0, "standardBSFamily", ("1", "2", "3")),
    "Standard_B2s": (2, 4.0, "standardBSFamily", ("1", "2", "3")),
    "Standard_D2s_v3": (2, 8.0, "standardDSv3Family", ("1", "2", "3")),
    "Standard_D4s_v3": (4, 16.0, "standardDSv3Family", ("1", "2", "3")),
    "Standard_D8s_v3": (8, 32.0, "standardDSv3Family", ("1", "2")),
    "Standard_F2s_v2": (2, 4.0, "standardFSv2Family", ("1", "2", "3")),
}
FAMILIES = {"standardBSFamily": "Standard BS Family vCPUs", "standardDSv3Family": "Standard DSv3 Family vCPUs",
            "standardFSv2Family": "Standard FSv2 Family vCPUs"}
CUSTOM_DATA_CHARACTERS = 87380
TYPES = {"vm": "Microsoft.Compute/virtualMachines", "disk": "Microsoft.Compute/disks",
         "nic": "Microsoft.Network/networkInterfaces", "ip": "Microsoft.Network/publicIPAddresses"}
_RG = r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
ROUTES = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in (
    ("vm", _RG + r"Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)$"),
    ("vm_view", _RG + r"Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)/instanceView$"),
    ("vm_evict", _RG + r"Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)/simulateEviction$"),
    ("vms", _RG + r"Microsoft\.Compute/virtualMachines$"),
    ("vms_all", r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/virtualMachines$"),
    ("operation", r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.(?P<rp>Compute|Network)/locations/"
                  r"(?P<loc>[^/]+)/operations/(?P<op>[^/]+)$"),
    ("usages", r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/usages$"),
    ("skus", r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/skus$"),
    ("disk", _RG + r"Microsoft\.Compute/disks/(?P<name>[^/]+)$"),
    ("disks", _RG + r"Microsoft\.Compute/disks$"),
    ("nic", _RG + r"Microsoft\.Network/networkInterfaces/(?P<name>[^/]+)$"),
    ("nics", _RG + r"Microsoft\.Network/networkInterfaces$"),
    ("ip", _RG + r"Microsoft\.Network/publicIPAddresses/(?P<name>[^/]+)$"),
    ("ips", _RG + r"Microsoft\.Network/publicIPAddresses$"),
)]


def stamp(at: float | None = None) -> str:
    """ARM's form of a time: 2026-12-02T05:12:32.1234567+00:00."""
    when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f0+00:00")


class ArmError(Exception):
    """An ARM error answer: status, code, message, details, headers."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class Arm:
    """The fake's state and server. ``start()`` serves it on a free loopback port in a thread of this process."""

    def __init__(self, directory: Path, *, op_seconds: float = 0.3, page_size: int = 0,
                 cores_limit: int = 100, family_limit: int = 100, low_priority_limit: int = 100,
                 record: Path | None = None, tenant: str = "00000000-0000-0000-0000-00000000aaaa",
                 client_id: str = "00000000-0000-0000-0000-00000000bbbb", client_secret: str = "s3cret-value") -> None:
        self.directory = directory
        self.op_seconds = op_seconds
        self.page_size = page_size
        self.limits = {"cores": cores_limit, "family": family_limit, "lowPriorityCores": low_priority_limit}
        self.record = record
        self.tenant, self.client_id, self.client_secret = tenant, client_id, client_secret
        self.secret_expired = False  # answer the client-credentials grant with AADSTS7000222
        self.client_certificate: Any = None  # the application's certificate, for client assertions
        self.unavailable: set[str] = set()  # sizes restricted in the location (NotAvailableForSubscription)
        self.lock = threading.RLock()
        self.resources: dict[str, dict[str, Any]] = {}  # lower-case id -> resource (keys with _ are the fake's)
        self.operations: dict[str, dict[str, Any]] = {}
        self.faults: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every ARM request
        self.sequence = 0
        self._server: ThreadingHTTPServer | None = None
        self.ca_file = directory / "arm-ca.pem"

    # --- the server ----------------------------------------------------------------------

    def start(self) -> Arm:
        import ssl

        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = _certificate(self.directory)
        self.ca_file = cert
        if self.record is not None:
            self.record.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"arm": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="fake-arm", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def issue_token(self) -> str:
        token = "fake-arm-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens.add(token)
        return token

    # --- what tests do to it -------------------------------------------------------------------

    def fault(self, method: str, path_contains: str, *, status: int = 0, code: str = "", message: str = "",
              retry_after: int | None = None, details: list[dict[str, Any]] | None = None, count: int = 1,
              async_error: dict[str, str] | None = None) -> None:
        """The next ``count`` requests of ``method`` whose path contains ``path_contains`` fail: with ``status``
        at once, or (``async_error``, a PUT) accepted and their operation failing later."""
        with self.lock:
            self.faults.append({"method": method.upper(), "path_contains": path_contains.lower(), "status": status,
                                "code": code, "message": message, "retry_after": retry_after, "details": details,
                                "count": count, "async_error": async_error})

    def of_kind(self, kind: str, subscription: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = [r for r in self.resources.values() if r["type"] == TYPES[kind]
                     and (subscription is None or r["id"].split("/")[2].lower() == subscription.lower())
                     and (group is None or r["id"].split("/")[4].lower() == group.lower())]
        return sorted(found, key=lambda r: r["name"])

    def names(self, kind: str) -> list[str]:
        return [r["name"] for r in self.of_kind(kind)]

    def vm(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.of_kind("vm") if r["name"] == name), None)

    def set_power(self, name: str, power: str, provisioning: str | None = None) -> None:
        with self.lock:
            vm = self.vm(name)
            assert vm is not None, name
            self.settle()
            for number, operation in list(self.operations.items()):  # what is set stays set
                if operation["target"].lower() == vm["id"].lower() and operation["status"] == "InProgress":
                    del self.operations[number]
            vm["_power"] = power
            if provisioning is not None:
                vm["properties"]["provisioningState"] = provisioning

    def evict(self, name: str) -> None:
        """Azure takes a spot VM back (evictionPolicy Delete: gone with its NIC, disk and IP; else deallocated)."""
        with self.lock:
            vm = self.vm(name)
            assert vm is not None and vm["properties"].get("priority") == "Spot", name
            if vm["properties"].get("evictionPolicy") == "Delete":
                self._remove_vm(vm)
            else:
                vm["_power"] = "deallocated"

    def add_vm(self, subscription: str, group: str, name: str, location: str, size: str = "Standard_B2s",
               tags: dict[str, str] | None = None) -> None:
        """A VM made by someone else (no NIC of ours), running."""
        with self.lock:
            rid = _id(subscription, group, "vm", name)
            self.resources[rid.lower()] = {
                "name": name, "id": rid, "type": TYPES["vm"], "location": location, "tags": tags or {},
                "properties": {"vmId": str(uuid.uuid4()), "hardwareProfile": {"vmSize": size},
                               "storageProfile": {"osDisk": {"osType": "Linux", "createOption": "FromImage",
                                                             "name": f"{name}_OsDisk_1_{uuid.uuid4().hex}"}},
                               "networkProfile": {"networkInterfaces": []}, "provisioningState": "Succeeded",
                               "timeCreated": stamp()},
                "_power": "running", "_error": None, "_changed": stamp()}

    # --- state rules ---------------------------------------------------------------------------

    def settle(self) -> None:
        """Operations finish by time, whether or not anyone polls (as on ARM)."""
        now = time.monotonic()
        for operation in list(self.operations.values()):
            if operation["status"] == "InProgress" and now - operation["started"] >= self.op_seconds:
                self._finish(operation)

    def _finish(self, operation: dict[str, Any]) -> None:
        operation["status"] = "Failed" if operation["error"] else "Succeeded"
        operation["end"] = stamp()
        target = self.resources.get(operation["target"].lower())
        if target is None:
            return
        if operation["error"]:
            if target["type"] == TYPES["vm"]:
                target["properties"]["provisioningState"] = "Failed"
                target["_error"] = operation["error"]
                target["_power"] = None
            return
        if operation["action"] == "delete":
            if target["type"] == TYPES["vm"]:
                self._remove_vm(target)
            else:
                self.resources.pop(target["id"].lower(), None)
            return
        target["properties"]["provisioningState"] = "Succeeded"
        if target["type"] == TYPES["vm"]:
            target["_power"] = "running"
            target["_changed"] = stamp()

    def _remove_vm(self, vm: dict[str, Any]) -> None:
        properties = vm["properties"]
        disk = self.resources.get(properties["storageProfile"]["osDisk"].get("managedDisk", {}).get("id", "").lower())
        if disk is not None:
            if properties["storageProfile"]["osDisk"].get("deleteOption") == "Delete":
                self.resources.pop(disk["id"].lower())
            else:
                disk.pop("managedBy", None)
                disk["properties"]["diskState"] = "Unattached"
        for reference in properties["networkProfile"]["networkInterfaces"]:
            nic = self.resources.get(reference["id"].lower())
            if nic is None:
                continue
            nic["properties"].pop("virtualMachine", None)
            if (reference.get("properties") or {}).get("deleteOption") == "Delete":
                self._remove_nic(nic)
        self.resources.pop(vm["id"].lower(), None)

    def _remove_nic(self, nic: dict[str, Any]) -> None:
        for configuration in nic["properties"]["ipConfigurations"]:
            ip = self.resources.get(((configuration["properties"].get("publicIPAddress") or {}).get("id") or "")
                                    .lower())
            if ip is not None:
                ip["properties"].pop("ipConfiguration", None)
                if ip["properties"].get("deleteOption") == "Delete":
                    self.resources.pop(ip["id"].lower())
        self.resources.pop(nic["id"].lower(), None)

    def used(self, subscription: str, location: str) -> tuple[int, dict[str, int], int, int]:
        """vCPUs held in a location: regular, per family, low-priority (spot), and the number of VMs."""
        regular, families, spot, count = 0, dict.fromkeys(FAMILIES, 0), 0, 0
        for vm in self.of_kind("vm", subscription):
            if vm["location"].lower() != location.lower() or vm.get("_power") in ("deallocated", None):
                continue
            cores, _, family, _ = SIZES.get(vm["properties"]["hardwareProfile"]["vmSize"], (0, 0, "", ()))
            count += 1
            if vm["properties"].get("priority") == "Spot":
                spot += cores
            else:
                regular += cores
                families[family] = families.get(family, 0) + cores
        return regular, families, spot, count


def _id(subscription: str, group: str, kind: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{TYPES[kind]}/{name}"


class _Handler(BaseHTTPRequestHandler):
    arm: Arm
    protocol_version = "HTTP/1.1"
    server_version = "FakeARM/2"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def base(self) -> str:
        return f"https://{self.headers.get('Host') or '127.0.0.1'}"

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path.startswith("/_fake/"):
            return self._control(method, path, raw)
        if "/oauth2/" in path or path.endswith("/.well-known/openid-configuration"):
            return self._login(method, path, raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        try:
            with self.arm.lock:
                self.arm.requests.append((method, path))
                self.arm.settle()
                self._authorize()
                if "api-version" not in query:
                    raise ArmError(400, "MissingApiVersionParameter",
                                   "The api-version query parameter (?api-version=) is required for all requests.")
                fault = self._fault(method, path)
                if fault is not None and fault["status"]:
                    headers = {} if fault["retry_after"] is None else {"Retry-After": str(fault["retry_after"])}
                    raise ArmError(fault["status"], fault["code"] or "TooManyRequests",
                                   fault["message"] or "The request is being throttled.", fault["details"], headers)
                status, headers, out = self._route(method, path, query, body, fault)
        except ArmError as error:
            status, headers, out = error.status, dict(error.headers), error.body()
        headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        headers.setdefault("x-ms-correlation-request-id", self.headers.get("x-ms-client-request-id") or
                           str(uuid.uuid4()))
        self._reply(status, headers, out)
        self._record(method, url.path, url.query, body if body is not None else (raw.decode() or None), status,
                     headers, out)

    def _reply(self, status: int, headers: dict[str, str], out: Any, content_type: str = "application/json") -> None:
        data = b"" if out is None else (out if isinstance(out, bytes) else json.dumps(out).encode())
        self.send_response(status)
        if out is not None:
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        for name, value in headers.items():
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write: no wait for a delayed ACK
        self.flush_headers()

    def _record(self, method: str, path: str, query: str, body: Any, status: int, headers: dict[str, str],
                out: Any) -> None:
        directory = self.arm.record
        if directory is None:
            return
        with self.arm.lock:
            self.arm.sequence += 1
            number = self.arm.sequence
        host = "https://management.azure.com"
        request_headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        response_headers = {k: v.replace(self.base, host) for k, v in headers.items()}
        if out is not None:
            response_headers["Content-Type"] = "application/json; charset=utf-8"
        entry = {"liveRequest": {"url": host + path + (f"?{query}" if query else ""), "method": method.lower(),
                                 "headers": request_headers, "body": body},
                 "liveResponse": {"statusCode": str(status), "headers": response_headers,
                                  "body": None if out is None else json.loads(json.dumps(out).replace(self.base,
                                                                                                       host))}}
        (directory / f"{number:05d}_{method}.json").write_text(json.dumps(entry, indent=1))

    def _authorize(self) -> None:
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                           headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                                                        'common", error="invalid_token"'})
        if given.removeprefix("Bearer ") not in self.arm.tokens:
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token", error_description="The access '
                                                        'token is invalid."'})

    def _fault(self, method: str, path: str) -> dict[str, Any] | None:
        for fault in self.arm.faults:
            if fault["method"] == method and fault["path_contains"] in path.lower():
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.arm.faults.remove(fault)
                return fault
        return None

    # --- Entra ID, as far as a client-credentials grant goes -------------------------------------

    def _login(self, method: str, path: str, raw: bytes) -> None:
        arm = self.arm
        tenant = path.strip("/").split("/")[0]
        if path.endswith("/.well-known/openid-configuration"):
            issuer = f"{self.base}/{tenant}/v2.0"
            return self._reply(200, {}, {"token_endpoint": f"{self.base}/{tenant}/oauth2/v2.0/token",
                                         "authorization_endpoint": f"{self.base}/{tenant}/oauth2/v2.0/authorize",
                                         "issuer": issuer, "token_endpoint_auth_methods_supported":
                                         ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                                         "response_types_supported": ["code", "id_token", "token"],
                                         "tenant_region_scope": "EU"})
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if method != "POST" or not path.endswith("/oauth2/v2.0/token"):
            return self._reply(404, {}, {"error": "not_found"})
        if tenant != arm.tenant:
            return self._reply(400, {}, _login_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found."))
        if "client_assertion" in form:  # a certificate's signed JWT instead of a secret
            if form.get("client_id") != arm.client_id or not self._asserted(form["client_assertion"], tenant):
                return self._reply(401, {}, _login_error("invalid_client", 700027, "Client assertion failed "
                                                         "signature validation."))
            return self._reply(200, {}, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                         "access_token": arm.issue_token()})
        if form.get("client_id") != arm.client_id or form.get("client_secret") != arm.client_secret:
            return self._reply(401, {}, _login_error("invalid_client", 7000215, "Invalid client secret provided. "
                                                     "Ensure the secret being sent in the request is the client "
                                                     "secret value, not the client secret ID."))
        if arm.secret_expired:
            return self._reply(401, {}, _login_error("invalid_client", 7000222, "The provided client secret keys "
                                                     f"for app '{arm.client_id}' are expired."))
        return self._reply(200, {}, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                     "access_token": arm.issue_token()})

    def _asserted(self, assertion: str, tenant: str) -> bool:
        """A client assertion (RS256 or PS256) signed by the key of the application's certificate, for this
        tenant's token endpoint, issued by and for the application, not expired."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        certificate = self.arm.client_certificate
        if certificate is None:
            return False
        try:
            header, claims, signature = assertion.split(".")
            head = json.loads(base64.urlsafe_b64decode(header + "=="))
            claim = json.loads(base64.urlsafe_b64decode(claims + "=="))
            scheme = padding.PSS(padding.MGF1(hashes.SHA256()), 32) if head.get("alg") == "PS256" else \
                padding.PKCS1v15()
            certificate.public_key().verify(base64.urlsafe_b64decode(signature + "=="), f"{header}.{claims}".encode(),
                                            scheme, hashes.SHA256())
        except (ValueError, InvalidSignature):
            return False
        return bool(claim.get("iss") == claim.get("sub") == self.arm.client_id and claim.get("exp", 0) > time.time()
                    and str(claim.get("aud", "")).endswith(f"/{tenant}/oauth2/v2.0/token"))

    # --- the fake's own control API (when it runs as a process of its own) ------------------------

    def _control(self, method: str, path: str, raw: bytes) -> None:
        arm = self.arm
        body = json.loads(raw) if raw else {}
        if path == "/_fake/faults" and method == "POST":
            for fault in body.get("faults", []):
                arm.fault(fault.pop("method"), fault.pop("path_contains"), **fault)
        elif path == "/_fake/token" and method == "POST":
            return self._reply(200, {}, {"token": arm.issue_token()})
        elif path == "/_fake/vm" and method == "POST":
            arm.add_vm(**body)
        elif path != "/_fake/state":
            return self._reply(404, {}, {"error": "no such control path"})
        with arm.lock:
            state = {"resources": sorted(r["id"] for r in arm.resources.values()), "requests": len(arm.requests)}
        return self._reply(200, {}, state)

    # --- ARM -----------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: Any,
               fault: dict[str, Any] | None) -> tuple[int, dict[str, str], Any]:
        for kind, pattern in ROUTES:
            match = pattern.match(path)
            if match:
                handler = getattr(self, f"_{kind}_{method.lower()}", None)
                if handler is None:
                    raise ArmError(405, "MethodNotAllowed", f"The requested method {method} is not allowed on {path}.")
                result: tuple[int, dict[str, str], Any] = handler(query=query, body=body, fault=fault,
                                                                  **match.groupdict())
                return result
        raise ArmError(404, "InvalidResourceType" if "/providers/" in path else "NotFound",
                       f"The resource type could not be found for path '{path}'.")

    def _async(self, rp: str, location: str, target: str, action: str, query: dict[str, str], *,
               error: dict[str, str] | None = None, monitor: bool = False, done: bool = False) -> dict[str, str]:
        operation = str(uuid.uuid4())
        subscription = target.split("/")[2]
        self.arm.operations[operation] = {"target": target, "action": action, "error": error,
                                          "started": time.monotonic(), "start": stamp(), "status": "InProgress"}
        if done:
            self.arm._finish(self.arm.operations[operation])
        base = f"{self.base}/subscriptions/{subscription}/providers/Microsoft.{rp}/locations/{location}/operations/" \
               f"{operation}"
        headers = {"Azure-AsyncOperation": f"{base}?p={uuid.uuid4()}&api-version={query['api-version']}",
                   "Retry-After": "10" if rp == "Compute" else "0"}
        if monitor:
            headers["Location"] = f"{base}?p={uuid.uuid4()}&monitor=true&api-version={query['api-version']}"
        return headers

    def _missing(self, kind: str, group: str, name: str) -> ArmError:
        return ArmError(404, "ResourceNotFound", f"The Resource '{TYPES[kind]}/{name}' under resource group "
                        f"'{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")

    def _page(self, items: list[Any], query: dict[str, str], path: str) -> dict[str, Any]:
        size = self.arm.page_size
        skip = int(query.get("$skiptoken") or 0)
        out: dict[str, Any] = {"value": items[skip:skip + size] if size else items}
        if size and skip + size < len(items):
            out["nextLink"] = f"{self.base}{path}?{urlencode(query | {'$skiptoken': str(skip + size)})}"
        return out

    def _get(self, kind: str, sub: str, rg: str, name: str) -> dict[str, Any]:
        found = self.arm.resources.get(_id(sub, rg, kind, name).lower())
        if found is None:
            raise self._missing(kind, rg, name)
        return found

    # virtual machines

    def _instance_view(self, vm: dict[str, Any]) -> dict[str, Any]:
        state = vm["properties"]["provisioningState"]
        first: dict[str, Any] = {"code": f"ProvisioningState/{state.lower()}", "level": "Info",
                                 "displayStatus": f"Provisioning {state.lower()}", "time": vm["_changed"]}
        if state == "Failed" and vm.get("_error"):
            first.update(code=f"ProvisioningState/failed/{vm['_error']['code']}", level="Error",
                         displayStatus="Provisioning failed", message=vm["_error"]["message"])
        statuses = [first]
        if vm.get("_power"):
            statuses.append({"code": f"PowerState/{vm['_power']}", "level": "Info",
                             "displayStatus": f"VM {vm['_power']}"})
        return {"computerName": vm["name"], "osName": "ubuntu", "osVersion": "22.04", "hyperVGeneration": "V2",
                "statuses": statuses}

    def _view(self, vm: dict[str, Any], expand: str | None = None) -> dict[str, Any]:
        out = {k: copy.deepcopy(v) for k, v in vm.items() if not k.startswith("_")}
        (out["properties"].get("osProfile") or {}).pop("customData", None)  # ARM never gives it back
        if expand == "instanceView":
            out["properties"]["instanceView"] = self._instance_view(vm)
        return out

    def _vm_get(self, sub: str, rg: str, name: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, self._view(self._get("vm", sub, rg, name), query.get("$expand"))

    def _vm_view_get(self, sub: str, rg: str, name: str, **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, self._instance_view(self._get("vm", sub, rg, name))

    def _vms_get(self, sub: str, rg: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        items = [self._view(vm) for vm in self.arm.of_kind("vm", sub, rg)]
        return 200, {}, self._page(items, query, f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                                                 "Microsoft.Compute/virtualMachines")

    def _vms_all_get(self, sub: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        items = []
        for vm in self.arm.of_kind("vm", sub):
            if query.get("statusOnly", "").lower() == "true":  # the instance views alone
                items.append({"name": vm["name"], "id": vm["id"], "type": vm["type"], "location": vm["location"],
                              "properties": {"instanceView": self._instance_view(vm)}})
            else:
                items.append(self._view(vm))
        return 200, {}, self._page(items, query, f"/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines")

    def _check_vm(self, sub: str, rg: str, name: str, body: Any) -> None:
        if not isinstance(body, dict) or "location" not in body:
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                           "deserialized: 'Could not find member 'location''.")
        properties = body.get("properties") or {}
        size = (properties.get("hardwareProfile") or {}).get("vmSize")
        location = body["location"]
        zones = body.get("zones") or []
        if size not in SIZES or size in self.arm.unavailable or any(z not in SIZES[size][3] for z in zones):
            raise ArmError(409, "SkuNotAvailable", f"The requested VM size for resource 'Following SKUs have failed "
                           f"for Capacity Restrictions: {size}' is currently not available in location '{location}'"
                           f"{' zones ' + ','.join(zones) if zones else ''}. Please try another size or deploy to a "
                           "different location or zones. See https://aka.ms/azureskunotavailable for details.")
        custom = (properties.get("osProfile") or {}).get("customData")
        if custom is not None:
            try:
                base64.b64decode(custom, validate=True)
                fits = len(custom) <= CUSTOM_DATA_CHARACTERS
            except (binascii.Error, ValueError):
                fits = False
            if not fits:
                raise ArmError(400, "InvalidParameter", "Custom data in OSProfile must be in Base64 encoding and "
                               f"with a maximum length of {CUSTOM_DATA_CHARACTERS} characters.")
        priority = properties.get("priority", "Regular")
        if properties.get("evictionPolicy") and priority != "Spot":
            raise ArmError(400, "InvalidParameter", "Eviction policy can be set only on Azure Spot Virtual Machines.")
        price = (properties.get("billingProfile") or {}).get("maxPrice")
        if price is not None and (priority != "Spot" or (price != -1 and price <= 0)):
            raise ArmError(400, "InvalidParameter", "The maxPrice must be -1 or greater than 0, on Spot only.")
        self._check_nics(sub, rg, name, (properties.get("networkProfile") or {}).get("networkInterfaces") or [])
        self._quotas(sub, location, size, priority)

    def _check_nics(self, sub: str, rg: str, name: str, references: list[dict[str, Any]]) -> None:
        if not references:
            raise ArmError(400, "InvalidParameter", "Required parameter 'networkProfile' is missing (null).")
        for reference in references:
            nic = self.arm.resources.get(str(reference.get("id", "")).lower())
            if nic is None:
                raise ArmError(400, "InvalidResourceReference", f"Resource {reference.get('id')} referenced by "
                               f"resource {_id(sub, rg, 'vm', name)} was not found. Please make sure that the "
                               "referenced resource exists, and that both resources are in the same region.")
            owner = (nic["properties"].get("virtualMachine") or {}).get("id")
            if owner and owner.lower() != _id(sub, rg, "vm", name).lower():
                raise ArmError(400, "NicInUse", f"Network Interface {nic['id']} is used by existing resource {owner}.")

    def _quotas(self, sub: str, location: str, size: str, priority: str) -> None:
        cores, _, family, _ = SIZES[size]
        regular, families, spot, _ = self.arm.used(sub, location)
        if priority == "Spot":
            self._quota(location, "Total Regional Low-priority vCPUs", self.arm.limits["lowPriorityCores"], spot, cores)
        else:
            self._quota(location, "Total Regional Cores", self.arm.limits["cores"], regular, cores)
            self._quota(location, f"{family} Cores", self.arm.limits["family"], families[family], cores)

    @staticmethod
    def _quota(location: str, what: str, limit: int, used: int, more: int) -> None:
        if used + more <= limit:
            return
        message = (f"Operation could not be completed as it results in exceeding approved {what} quota. Additional "
                   f"details - Deployment Model: Resource Manager, Location: {location}, Current Limit: {limit}, "
                   f"Current Usage: {used}, Additional Required: {more}, (Minimum) New Limit Required: "
                   f"{used + more}. Submit a request for Quota increase at https://aka.ms/ProdportalCRP by "
                   "specifying parameters listed in the 'Details' section for deployment to succeed.")
        raise ArmError(409, "OperationNotAllowed", message, [{"code": "QuotaExceeded", "target": what,
                                                              "message": message}])

    def _vm_put(self, sub: str, rg: str, name: str, query: dict[str, str], body: Any, fault: dict[str, Any] | None,
                **_: Any) -> tuple[int, dict, Any]:
        rid = _id(sub, rg, "vm", name)
        existing = self.arm.resources.get(rid.lower())
        if existing is not None and self.headers.get("If-None-Match") == "*":
            raise ArmError(412, "PreconditionFailed", f"The condition specified using HTTP conditional header(s) is "
                           f"not met: virtual machine '{name}' exists.")
        if existing is not None:
            if existing["properties"]["provisioningState"] in ("Creating", "Deleting"):
                raise ArmError(409, "OperationNotAllowed", f"Operation 'Put' is not allowed on VM '{name}' since the "
                               "VM is marked for deletion or being created.")
            existing["tags"] = (body or {}).get("tags", existing["tags"])  # an update: tags only, here
            return 200, self._async("Compute", existing["location"], rid, "update", query, done=True), \
                self._view(existing)
        self._check_vm(sub, rg, name, body)
        properties = copy.deepcopy(body["properties"])
        location = body["location"]
        disk = properties.setdefault("storageProfile", {}).setdefault("osDisk", {})
        disk.setdefault("createOption", "FromImage")
        disk.setdefault("osType", "Linux")
        disk.setdefault("caching", "ReadWrite")
        disk.setdefault("deleteOption", "Detach")
        disk.setdefault("name", f"{name}_OsDisk_1_{uuid.uuid4().hex}")
        disk.setdefault("diskSizeGB", 30)
        managed = disk.setdefault("managedDisk", {})
        managed.setdefault("storageAccountType", "Premium_LRS")
        managed["id"] = _id(sub, rg, "disk", disk["name"])
        for reference in properties["networkProfile"]["networkInterfaces"]:
            reference.setdefault("properties", {}).setdefault("deleteOption", "Detach")
        if properties.get("osProfile"):
            properties["osProfile"].setdefault("computerName", name)
            properties["osProfile"].setdefault("secrets", [])
            properties["osProfile"].setdefault("allowExtensionOperations", True)
        properties.update(vmId=str(uuid.uuid4()), provisioningState="Creating", timeCreated=stamp())
        vm = {"name": name, "id": rid, "type": TYPES["vm"], "location": location, "tags": body.get("tags") or {},
              "properties": properties, "_power": "starting", "_changed": stamp(), "_error": None,
              "_custom_data": (properties.get("osProfile") or {}).get("customData")}
        if body.get("zones"):
            vm["zones"] = body["zones"]
        self.arm.resources[rid.lower()] = vm
        self.arm.resources[managed["id"].lower()] = {
            "name": disk["name"], "id": managed["id"], "type": TYPES["disk"], "location": location, "tags": {},
            "managedBy": rid, "sku": {"name": managed["storageAccountType"], "tier": "Premium"},
            **({"zones": body["zones"]} if body.get("zones") else {}),
            "properties": {"osType": "Linux", "hyperVGeneration": "V2", "creationData": {"createOption": "FromImage"},
                           "diskSizeGB": disk["diskSizeGB"], "diskState": "Attached", "provisioningState": "Succeeded",
                           "timeCreated": stamp(), "uniqueId": str(uuid.uuid4())}}
        for reference in properties["networkProfile"]["networkInterfaces"]:
            self.arm.resources[reference["id"].lower()]["properties"]["virtualMachine"] = {"id": rid}
        headers = self._async("Compute", location, rid, "create", query, error=(fault or {}).get("async_error"))
        view = self._view(vm)
        view["properties"]["storageProfile"]["osDisk"]["managedDisk"].pop("id")  # not in ARM's 201 yet
        return 201, headers, view

    def _vm_delete(self, sub: str, rg: str, name: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        rid = _id(sub, rg, "vm", name)
        vm = self.arm.resources.get(rid.lower())
        if vm is None:
            return 204, {}, None
        vm["properties"]["provisioningState"] = "Deleting"
        vm["_power"] = "deallocating" if vm.get("_power") else None
        return 202, self._async("Compute", vm["location"], rid, "delete", query, monitor=True), None

    def _vm_evict_post(self, sub: str, rg: str, name: str, **_: Any) -> tuple[int, dict, Any]:
        vm = self._get("vm", sub, rg, name)
        if vm["properties"].get("priority") != "Spot":
            raise ArmError(409, "OperationNotAllowed", "Simulate eviction is only supported on Azure Spot Virtual "
                                                       "Machines.")
        self.arm.evict(name)
        return 204, {}, None

    def _operation_get(self, sub: str, op: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        operation = self.arm.operations.get(op)
        if operation is None:
            raise ArmError(404, "NotFound", f"The operation '{op}' was not found.")
        if query.get("monitor", "").lower() == "true":
            if operation["status"] == "InProgress":
                return 202, {"Location": f"{self.base}{self.path}", "Retry-After": "10"}, None
            if operation["status"] == "Failed":
                raise ArmError(400, operation["error"]["code"], operation["error"]["message"])
            return 200, {}, None
        out: dict[str, Any] = {"startTime": operation["start"], "status": operation["status"], "name": op}
        if operation["status"] != "InProgress":
            out["endTime"] = operation["end"]
        if operation["status"] == "Failed":
            out["error"] = dict(operation["error"])
        return 200, {}, out

    def _usages_get(self, sub: str, loc: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        regular, families, spot, count = self.arm.used(sub, loc)

        def usage(name: str, shown: str, current: int, limit: int) -> dict[str, Any]:
            return {"unit": "Count", "currentValue": current, "limit": limit,
                    "name": {"value": name, "localizedValue": shown}}

        limits = self.arm.limits
        items = [usage("cores", "Total Regional vCPUs", regular, limits["cores"]),
                 usage("virtualMachines", "Virtual Machines", count, 25000),
                 usage("lowPriorityCores", "Total Regional Low-priority vCPUs", spot, limits["lowPriorityCores"])]
        items += [usage(family, shown, families[family], limits["family"]) for family, shown in FAMILIES.items()]
        return 200, {}, self._page(items, query, f"/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/"
                                                 "usages")

    def _skus_get(self, sub: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        location = re.search(r"location eq '([^']+)'", query.get("$filter", ""))
        where = location.group(1) if location else "westeurope"
        items = []
        for name, (cores, memory, family, zones) in SIZES.items():
            sku: dict[str, Any] = {
                "resourceType": "virtualMachines", "name": name, "tier": "Standard", "size": name.split("_", 1)[1],
                "family": family, "locations": [where],
                "locationInfo": [{"location": where, "zones": list(zones), "zoneDetails": []}],
                "capabilities": [{"name": "vCPUs", "value": str(cores)}, {"name": "MemoryGB", "value": f"{memory:g}"},
                                 {"name": "LowPriorityCapable", "value": "True"}],
                "restrictions": []}
            if name in self.arm.unavailable:
                sku["restrictions"].append({"type": "Location", "values": [where], "reasonCode":
                                            "NotAvailableForSubscription", "restrictionInfo": {"locations": [where]}})
            items.append(sku)
        items.append({"resourceType": "disks", "name": "Premium_LRS", "tier": "Premium", "kind": "Disks",
                      "locations": [where], "capabilities": [], "restrictions": []})
        return 200, {}, self._page(items, query, f"/subscriptions/{sub}/providers/Microsoft.Compute/skus")

    # disks

    def _disk_get(self, sub: str, rg: str, name: str, **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, copy.deepcopy(self._get("disk", sub, rg, name))

    def _disks_get(self, sub: str, rg: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, self._page(copy.deepcopy(self.arm.of_kind("disk", sub, rg)), query,
                                   f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks")

    def _disk_patch(self, sub: str, rg: str, name: str, body: Any, query: dict[str, str], **_: Any
                    ) -> tuple[int, dict, Any]:
        disk = self._get("disk", sub, rg, name)
        if "tags" in (body or {}):
            disk["tags"] = body["tags"]
        return 200, self._async("Compute", disk["location"], disk["id"], "update", query, done=True), \
            copy.deepcopy(disk)

    def _disk_delete(self, sub: str, rg: str, name: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        disk = self.arm.resources.get(_id(sub, rg, "disk", name).lower())
        if disk is None:
            return 204, {}, None
        if disk.get("managedBy"):
            raise ArmError(409, "OperationNotAllowed", f"Disk {name} is attached to VM {disk['managedBy']}.")
        return 202, self._async("Compute", disk["location"], disk["id"], "delete", query, monitor=True, done=True), \
            None

    # network interfaces and public IPs (the network RP finishes its operations at once here)

    def _nic_put(self, sub: str, rg: str, name: str, query: dict[str, str], body: Any, **_: Any
                 ) -> tuple[int, dict, Any]:
        rid = _id(sub, rg, "nic", name)
        if not isinstance(body, dict) or "location" not in body:
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request.")
        properties = copy.deepcopy(body.get("properties") or {})
        configurations = properties.get("ipConfigurations") or []
        if not configurations:
            raise ArmError(400, "NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
                           f"Network interface {rid} must have at least one IP configuration.")
        existing = self.arm.resources.get(rid.lower())
        for number, configuration in enumerate(configurations):
            configuration.setdefault("name", f"ipconfig{number + 1}")
            configuration["id"] = f"{rid}/ipConfigurations/{configuration['name']}"
            configuration["type"] = "Microsoft.Network/networkInterfaces/ipConfigurations"
            inner = configuration.setdefault("properties", {})
            if not (inner.get("subnet") or {}).get("id"):
                raise ArmError(400, "InvalidRequestFormat", "Subnet is required on the IP configuration.")
            inner.setdefault("privateIPAllocationMethod", "Dynamic")
            inner.setdefault("privateIPAddressVersion", "IPv4")
            inner.setdefault("primary", number == 0)
            inner["provisioningState"] = "Succeeded"
            inner.setdefault("privateIPAddress", str(ipaddress.ip_address("10.0.0.4") + len(self.arm.resources)))
            ip_id = (inner.get("publicIPAddress") or {}).get("id")
            if ip_id:
                ip = self.arm.resources.get(ip_id.lower())
                if ip is None:
                    raise ArmError(400, "InvalidResourceReference", f"Resource {ip_id} referenced by resource {rid} "
                                                                    "was not found.")
                ip["properties"]["ipConfiguration"] = {"id": configuration["id"]}
        properties.update(provisioningState="Succeeded", resourceGuid=existing["properties"]["resourceGuid"]
                          if existing else str(uuid.uuid4()))
        properties.setdefault("enableAcceleratedNetworking", False)
        properties.setdefault("enableIPForwarding", False)
        properties.setdefault("nicType", "Standard")
        if existing is not None and existing["properties"].get("virtualMachine"):
            properties["virtualMachine"] = existing["properties"]["virtualMachine"]
        nic = {"name": name, "id": rid, "type": TYPES["nic"], "location": body["location"],
               "tags": body.get("tags") or {}, "etag": f'W/"{uuid.uuid4()}"', "properties": properties}
        self.arm.resources[rid.lower()] = nic
        headers = self._async("Network", body["location"], rid, "create", query, done=True)
        return (200 if existing else 201), headers, copy.deepcopy(nic)

    def _nic_get(self, sub: str, rg: str, name: str, **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, copy.deepcopy(self._get("nic", sub, rg, name))

    def _nics_get(self, sub: str, rg: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, self._page(copy.deepcopy(self.arm.of_kind("nic", sub, rg)), query,
                                   f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/"
                                   "networkInterfaces")

    def _nic_delete(self, sub: str, rg: str, name: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        nic = self.arm.resources.get(_id(sub, rg, "nic", name).lower())
        if nic is None:
            return 204, {}, None
        user = (nic["properties"].get("virtualMachine") or {}).get("id")
        if user:
            raise ArmError(400, "NicInUse", f"Network Interface {nic['id']} is used by existing resource {user}. In "
                           "order to delete the network interface, it must be dissociated from the resource. To learn "
                           "more, see aka.ms/deletenic.")
        for configuration in nic["properties"]["ipConfigurations"]:
            ip = self.arm.resources.get(((configuration["properties"].get("publicIPAddress") or {}).get("id") or "")
                                        .lower())
            if ip is not None:
                ip["properties"].pop("ipConfiguration", None)
        headers = self._async("Network", nic["location"], nic["id"], "delete", query, monitor=True, done=True)
        return 202, headers, None

    def _ip_put(self, sub: str, rg: str, name: str, query: dict[str, str], body: Any, **_: Any
                ) -> tuple[int, dict, Any]:
        rid = _id(sub, rg, "ip", name)
        existing = self.arm.resources.get(rid.lower())
        properties = copy.deepcopy((body or {}).get("properties") or {})
        properties.setdefault("publicIPAllocationMethod", "Static")
        properties.setdefault("publicIPAddressVersion", "IPv4")
        properties.setdefault("idleTimeoutInMinutes", 4)
        properties.update(provisioningState="Succeeded", resourceGuid=str(uuid.uuid4()),
                          ipAddress=str(ipaddress.ip_address("198.51.100.10") + len(self.arm.resources) % 200))
        if existing is not None and existing["properties"].get("ipConfiguration"):
            properties["ipConfiguration"] = existing["properties"]["ipConfiguration"]
        ip = {"name": name, "id": rid, "type": TYPES["ip"], "location": body["location"],
              "tags": body.get("tags") or {}, "sku": body.get("sku") or {"name": "Standard", "tier": "Regional"},
              "etag": f'W/"{uuid.uuid4()}"', "properties": properties}
        self.arm.resources[rid.lower()] = ip
        headers = self._async("Network", body["location"], rid, "create", query, done=True)
        return (200 if existing else 201), headers, copy.deepcopy(ip)

    def _ip_get(self, sub: str, rg: str, name: str, **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, copy.deepcopy(self._get("ip", sub, rg, name))

    def _ips_get(self, sub: str, rg: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        return 200, {}, self._page(copy.deepcopy(self.arm.of_kind("ip", sub, rg)), query,
                                   f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/"
                                   "publicIPAddresses")

    def _ip_delete(self, sub: str, rg: str, name: str, query: dict[str, str], **_: Any) -> tuple[int, dict, Any]:
        ip = self.arm.resources.get(_id(sub, rg, "ip", name).lower())
        if ip is None:
            return 204, {}, None
        if ip["properties"].get("ipConfiguration"):
            raise ArmError(400, "PublicIPAddressCannotBeDeleted", f"Public IP address {ip['id']} can not be deleted "
                           f"since it is still allocated to resource {ip['properties']['ipConfiguration']['id']}.")
        headers = self._async("Network", ip["location"], ip["id"], "delete", query, monitor=True, done=True)
        return 202, headers, None


def _login_error(error: str, code: int, description: str) -> dict[str, Any]:
    return {"error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code],
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"), "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4())}


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1 and localhost (what clients trust) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert, key_file = directory / "arm-ca.pem", directory / "arm-key.pem"
    if cert.exists() and key_file.exists():
        return cert, key_file
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake ARM")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=7))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key_file


def serve(directory: Path, **options: Any) -> Iterator[Arm]:
    """Run a fake until the generator is closed (for fixtures)."""
    arm = Arm(directory, **options).start()
    try:
        yield arm
    finally:
        arm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="the fake ARM as a process of its own (benchmarks/azure.py)")
    parser.add_argument("directory", type=Path, help="where its certificate, url and tenant go")
    parser.add_argument("--op-seconds", type=float, default=0.3)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--vcpus", type=int, default=100, help="each vCPU quota of the location (regional, family, "
                                                                 "low-priority)")
    arguments = parser.parse_args()
    arm = Arm(arguments.directory, op_seconds=arguments.op_seconds, record=arguments.record,
              cores_limit=arguments.vcpus, family_limit=arguments.vcpus, low_priority_limit=arguments.vcpus).start()
    (arguments.directory / "url").write_text(arm.url)
    print(arm.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

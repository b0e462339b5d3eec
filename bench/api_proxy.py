"""A counting HTTPS proxy between the operator under measurement and the rig's API server.

This module owns one loopback listener with a throwaway self-signed certificate, the kubeconfig
that points the operator at it, and the counts of what passes: requests by verb and resource,
and watch events streamed back by resource. Every request goes on unchanged with the rig's own
credentials (read by `agentworker_operator.kube.load_connection` from KUBECONFIG), and every
answer streams back, watches included, so the operator talks TLS to it as it would to the API
server. It changes no request and decides nothing; `describe` (which verb and resource a
request is) is pure."""

from __future__ import annotations

import base64
import collections
import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentworker_operator import kube

HOST = "127.0.0.1"
FORWARDED_HEADERS = ("Accept", "Content-Type", "User-Agent")
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
"""No total: a watch lasts as long as the API server keeps it (kopf asks for 300 s)."""

Counts = dict[tuple[str, str], int]
"""(verb, resource) -> requests; verbs as in audit logs (GET, LIST, WATCH, PATCH, ...)."""


def describe(method: str, path: str, *, watch: bool) -> tuple[str, str]:
    """(verb, resource[/subresource]) of an API request, e.g. ("PATCH", "agentworkers/status")."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return method, "non-resource"
    if not rest:
        return method, "discovery"
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    named = len(rest) >= 2
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    if method == "GET":
        return ("WATCH" if watch else "GET" if named else "LIST"), resource
    if method == "DELETE" and not named:
        return "DELETECOLLECTION", resource
    return method, resource


def self_signed_certificate() -> tuple[bytes, bytes]:
    """(certificate, key) in PEM for 127.0.0.1, valid for a day, its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentworker-bench-api-proxy")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def build_kubeconfig(server: str, ca_pem: bytes, namespace: str) -> dict[str, object]:
    """A kubeconfig for `server` that trusts `ca_pem` and carries no credentials."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bench-proxy",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "bench-proxy", "user": {}}],
        "contexts": [
            {
                "name": "bench-proxy",
                "context": {
                    "cluster": "bench-proxy",
                    "user": "bench-proxy",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "bench-proxy",
    }


class ApiProxy:
    """Listens on 127.0.0.1:<port>, forwards to the API server, counts; `start()`, `aclose()`."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._connection = kube.load_connection()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._events: collections.Counter[str] = collections.Counter()
        self.kubeconfig = workdir / "proxy-kubeconfig.json"

    def counts(self) -> Counts:
        """A copy of the request counts so far."""
        return dict(self._counts)

    def watch_events(self) -> dict[str, int]:
        """Watch events streamed to the operator so far, by resource (one JSON line each)."""
        return dict(self._events)

    async def start(self, namespace: str) -> None:
        """Listen on a free port and write `kubeconfig` for it."""
        cert, key = self_signed_certificate()
        (self._workdir / "proxy.crt").write_bytes(cert)
        (self._workdir / "proxy.key").write_bytes(key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._workdir / "proxy.crt", self._workdir / "proxy.key")
        connector = aiohttp.TCPConnector(ssl=self._connection.ssl_context, limit=0)
        self._session = aiohttp.ClientSession(connector=connector, timeout=UPSTREAM_TIMEOUT)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # handler_cancellation: a client that hangs up (the operator stopping) ends its watch
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0, ssl_context=context, shutdown_timeout=1.0)
        await site.start()
        port = int(self._runner.addresses[0][1])
        config = build_kubeconfig(f"https://{HOST}:{port}", cert, namespace)
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")

    async def aclose(self) -> None:
        """Stop listening, close the upstream session, remove the key; idempotent."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        (self._workdir / "proxy.key").unlink(missing_ok=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        watch = request.query.get("watch") in ("true", "1")
        verb, resource = describe(request.method, request.path, watch=watch)
        self._counts[verb, resource] += 1
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        token = self._connection.token()
        if token:
            headers["Authorization"] = token
        body = await request.read()
        async with self._session.request(
            request.method,
            self._connection.server + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if watch:
                    self._events[resource] += chunk.count(b"\n")
                await response.write(chunk)
            await response.write_eof()
            return response

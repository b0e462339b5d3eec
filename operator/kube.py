"""A small async client for the few Kubernetes calls the operator makes, on plain dicts.

This module owns the wire: where the API server is (kubeconfig or in-cluster, loaded with the
kubernetes package's config loader), authentication, timeouts, server-side apply under the
operator's one field manager, status merge patches, reads, Secrets rewritten only while their
owner's (a JSON patch that tests the owner reference), and Lease create/replace for leader
election. It only moves data: no decisions, no kopf, and it never logs request bodies (a Secret
read returns its key names only, never values).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import random
import re
import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import kubernetes.client
import kubernetes.config

from agentworker_operator import builders

REQUEST_TIMEOUT_S = 10.0
_PLURALS = {
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Service": "services",
    "Lease": "leases",
    "Secret": "secrets",
    "Pod": "pods",
    "Event": "events",
    "AgentWorker": builders.PLURAL,
}


Body = Mapping[str, Any] | Sequence[Mapping[str, Any]]
"""A request body: an object, or the list of operations of a JSON patch."""


class KubeError(Exception):
    """The API server refused a request (status, reason and its message)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}")


_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def encode_body(body: Body, content_type: str) -> str:
    """JSON, all ASCII. An apply patch is decoded as YAML, whose parser refuses the
    surrogate-pair escapes JSON gives a character beyond U+FFFF (and raw control characters):
    there each pair becomes YAML's own 8-digit escape."""
    text = json.dumps(body)
    if "yaml" not in content_type:
        return text

    def astral(pair: re.Match[str]) -> str:
        high, low = int(pair.group(2), 16), int(pair.group(3), 16)
        code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        return f"{pair.group(1)}\\U{code:08x}"

    return _SURROGATE_PAIR.sub(astral, text)


UNTYPABLE_PATCH = "failed to create typed patch object"
"""What server-side apply answers (with a 500) when a field has the wrong type for its schema,
e.g. a pass-through pod field: the request will never succeed as it is."""


class Conflict(KubeError):
    """409: someone else changed the object first (optimistic concurrency)."""


class NotOurs(Exception):
    """An object the operator would write exists and is not its owner's to write (someone
    else made it): it is left as it is. The message names it and what to rename."""


class Throttled(KubeError):
    """429 or 5xx: the API server is busy or unwell; worth trying again."""

    def __init__(self, status: int, text: str, retry_after_s: float | None) -> None:
        error = _error(status, text)
        super().__init__(status, error.reason, str(error).split(": ", 1)[-1])
        self.retry_after_s = retry_after_s


RETRIES = 3
MAX_RETRY_DELAY_S = 10.0


def backoff_s(attempt: int) -> float:
    """Delay before retry `attempt` (0-based): 0.2 s doubling, jittered by +-20 %."""
    return 0.2 * 2.0**attempt * random.uniform(0.8, 1.2)


def _retry_after_s(header: str | None) -> float | None:
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """How to reach and authenticate to the API server."""

    server: str
    ssl_context: ssl.SSLContext | bool
    token: Callable[[], str | None]
    """Current bearer token (re-read each request, so rotated tokens are picked up)."""


def load_connection() -> Connection:
    """The in-cluster service account, else KUBECONFIG / ~/.kube/config."""
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]  # kubernetes.config is unannotated
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]  # kubernetes.config is unannotated
    context: ssl.SSLContext | bool = False
    if cfg.verify_ssl:
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file and cfg.key_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)

    def token() -> str | None:
        # kubernetes>=35 files the token as "BearerToken", older releases as "authorization";
        # the hook (re)reads rotated service account tokens.
        value: str | None = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        return value

    return Connection(server=cfg.host.rstrip("/"), ssl_context=context, token=token)


def path_of(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """REST path of a namespaced object (or of its collection when name is None)."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{_PLURALS[kind]}"
    return path if name is None else f"{path}/{name}"


def agentworker_path(namespace: str, name: str) -> str:
    """REST path of an AgentWorker."""
    return path_of(f"{builders.GROUP}/{builders.VERSION}", builders.KIND, namespace, name)


class Kube:
    """An open connection to the API server; use `async with Kube.connect()`."""

    def __init__(self, connection: Connection, session: aiohttp.ClientSession) -> None:
        self._connection = connection
        self._session = session

    @classmethod
    def connect(cls, connection: Connection | None = None) -> Kube:
        """A client on its own HTTP session (closed by `aclose`)."""
        conn = connection or load_connection()
        connector = aiohttp.TCPConnector(ssl=conn.ssl_context, limit=16)
        # each request's own time on the wire is bounded, not its wait for one of the 16
        # connections: under a burst of reconciles that wait is the queue, not a fault
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=REQUEST_TIMEOUT_S, sock_read=REQUEST_TIMEOUT_S
        )
        return cls(conn, aiohttp.ClientSession(connector=connector, timeout=timeout))

    async def aclose(self) -> None:
        """Close the HTTP session; safe to call twice."""
        if not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Body | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call, tried again on 429, 5xx or a dropped connection (bounded, jittered,
        honouring Retry-After); the decoded JSON answer, or KubeError (Conflict for 409)."""
        for attempt in range(RETRIES + 1):
            try:
                return await self._request_once(method, path, body, content_type, params)
            except Throttled as error:
                if attempt == RETRIES:
                    raise
                delay_s = error.retry_after_s or backoff_s(attempt)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                if attempt == RETRIES:
                    raise
                delay_s = backoff_s(attempt)
            await asyncio.sleep(min(delay_s, MAX_RETRY_DELAY_S))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _request_once(
        self,
        method: str,
        path: str,
        body: Body | None,
        content_type: str,
        params: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        token = self._connection.token()
        if token:
            headers["Authorization"] = token
        data = None if body is None else encode_body(body, content_type)
        url = self._connection.server + path
        async with self._session.request(
            method, url, data=data, headers=headers, params=params
        ) as response:
            text = await response.text()
            if response.status == 500 and UNTYPABLE_PATCH in text:
                raise _error(response.status, text)  # the object, not the server: no retry
            if response.status == 429 or response.status >= 500:
                raise Throttled(
                    response.status, text, _retry_after_s(response.headers.get("Retry-After"))
                )
            if response.status >= 400:
                raise _error(response.status, text)
            answer: dict[str, Any] = json.loads(text) if text else {}
            return answer

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at path, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager, taking over managed fields."""
        meta = manifest["metadata"]
        path = path_of(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        return await self.request(
            "PATCH",
            path,
            body=manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": builders.FIELD_MANAGER, "force": "true"},
        )

    async def patch_status(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource of the object at path."""
        return await self.request(
            "PATCH",
            f"{path}/status",
            body={"status": patch},
            content_type="application/merge-patch+json",
        )

    async def list_items(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        """The objects of the collection at path that match the label selector."""
        answer = await self.request("GET", path, params={"labelSelector": label_selector})
        items: list[dict[str, Any]] = answer.get("items") or []
        return items

    async def patch_annotations(
        self, namespace: str, pod: str, annotations: Mapping[str, str | None]
    ) -> None:
        """Merge-patch a pod's annotations (None removes one)."""
        await self.annotate(path_of("v1", "Pod", namespace, pod), annotations)

    async def annotate(self, path: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch the annotations of the object at path (None removes one)."""
        await self.request(
            "PATCH",
            path,
            body={"metadata": {"annotations": dict(annotations)}},
            content_type="application/merge-patch+json",
        )

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object (Conflict when it exists already)."""
        meta = manifest["metadata"]
        path = path_of(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        return await self.request("POST", path, body=manifest)

    async def patch_owned_secret(self, manifest: Mapping[str, Any], owner_uid: str) -> bool:
        """Write the Secret `manifest` over the stored one of its name only while `owner_uid`
        owns that one (`builders.build_owned_secret_patch`: a JSON patch whose first op tests
        the owner reference; verb patch, nothing read). False when the API server refuses it
        for that (422); KubeError otherwise, 404 included (the Secret went meanwhile: create
        it again)."""
        meta = manifest["metadata"]
        try:
            await self.request(
                "PATCH",
                path_of("v1", "Secret", meta["namespace"], meta["name"]),
                body=builders.build_owned_secret_patch(manifest, owner_uid),
                content_type="application/json-patch+json",
            )
        except KubeError as error:
            if error.status == 422:
                return False
            raise
        return True

    async def delete_owned(self, path: str, owner_uid: str) -> bool:
        """Delete the object at path only while `owner_uid` is its controller (an object of that
        name the user made is left alone); the uid precondition makes a newer object of the
        name safe too. Whether it was deleted (False: none, or not ours)."""
        found = await self.get(path)
        if found is None:
            return False
        meta = found.get("metadata") or {}
        controllers = [
            ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")
        ]
        if controllers != [owner_uid]:
            return False
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": meta.get("uid")},
        }
        try:
            await self.request("DELETE", path, body=options)
        except KubeError as error:
            if error.status in (404, 409):  # gone meanwhile, or a newer object of the name
                return False
            raise
        return True

    async def ensure_random_key(self, namespace: str, name: str, key: str) -> bytes:
        """The random bytes under `key` of the Secret namespace/name, made once when missing
        (a replica that loses the race to create it reads the winner's)."""
        path = path_of("v1", "Secret", namespace, name)
        secret = await self.get(path)
        if secret is None:
            made = secrets.token_bytes(32)
            manifest = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque",
                "data": {key: base64.b64encode(made).decode()},
            }
            try:
                await self.create(manifest)
                return made
            except Conflict:
                secret = await self.get(path)
        encoded = ((secret or {}).get("data") or {}).get(key)
        if not isinstance(encoded, str) or not encoded:
            raise KubeError(422, "Invalid", f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(encoded)

    async def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        """Every value of a Secret (base64-decoded), or None when it does not exist."""
        secret = await self.get(path_of("v1", "Secret", namespace, name))
        if secret is None:
            return None
        data = secret.get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    async def post_event(
        self, involved: Mapping[str, Any], *, type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `involved` (an object as read from the API)."""
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self.request(
            "POST",
            path_of("v1", "Event", meta["namespace"]),
            body={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": involved.get("apiVersion", ""),
                    "kind": involved.get("kind", ""),
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta.get("uid", ""),
                },
                "type": type,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": builders.FIELD_MANAGER},
                "reportingComponent": builders.FIELD_MANAGER,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )


def _error(status: int, text: str) -> KubeError:
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = {}
    if not isinstance(decoded, dict):
        decoded = {}
    reason = str(decoded.get("reason") or "Unknown")
    message = str(decoded.get("message") or text[:200])
    kind = Conflict if status == 409 else KubeError
    return kind(status, reason, message)

"""LiveKit webhooks: POST /livekit/webhook, verified, made into the events the dispatch guard needs.

This module owns the HTTP endpoint, the check of LiveKit's signature and the `WebhookEvent` it
hands on. The LiveKit server signs each request with one API key: a JWT in the Authorization
header whose `iss` is the key and whose `sha256` claim is the hash of the body. The key is read
from the token unverified, its secret looked up with `secrets`, then livekit-api's
`TokenVerifier` checks signature, issuer and expiry. The body is read only after that, then
hashed and parsed as livekit-api's `WebhookReceiver` does (not through it: it raises a bare
Exception both for a bad hash and in parsing, where we answer 401 and 400).

It decides nothing about rooms or dispatch (`on_event` does, elsewhere) and must stay quick: it
answers as soon as `on_event` returned. The body, the token and room names never reach logs; each
request is counted in `metrics.WEBHOOKS` by event and outcome instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from aiohttp import ClientPayloadError, hdrs, web
from google.protobuf import json_format
from livekit import api
from livekit.protocol import models
from livekit.protocol import webhook as webhook_pb

from agentworker_operator import metrics

logger = logging.getLogger(__name__)

PATH = "/livekit/webhook"
MAX_BODY_BYTES = 64 * 1024  # LiveKit's events are a few KiB; anything near this is not one
READ_TIMEOUT_S = 5.0
"""Seconds a client may take to send the body once its token verified."""

Secrets = Callable[[str], str | None]
"""API key -> its secret, None when no AgentWorker's credentials hold that key. Called on the
event loop for every request: it must answer from memory."""


class EventType(enum.StrEnum):
    """The webhook events the dispatch guard is told about (LiveKit's names)."""

    ROOM_STARTED = "room_started"
    ROOM_FINISHED = "room_finished"
    PARTICIPANT_JOINED = "participant_joined"
    PARTICIPANT_LEFT = "participant_left"


class Outcome(enum.StrEnum):
    """What became of one request: the `outcome` label of agentworker_webhooks_total."""

    DELIVERED = "delivered"
    IGNORED = "ignored"
    """Verified, but an event the guard does not need (tracks, egress, ...) or without a room."""
    WRONG_METHOD = "wrong_method"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    INCOMPLETE = "incomplete"
    """The client went away before its body arrived."""
    UNSIGNED = "unsigned"
    BAD_TOKEN = "bad_token"
    UNKNOWN_KEY = "unknown_key"
    BODY_MISMATCH = "body_mismatch"
    MALFORMED = "malformed"
    FAILED = "failed"
    """`on_event` raised: a bug on our side, answered 500."""
    STANDBY = "standby"
    """This replica does not hold a Lease (or its sync loop is not running yet): answered 503,
    which LiveKit's webhook client retries (a 4xx it drops)."""


UNVERIFIED = "unknown"
"""The `event` label until the body is parsed, which it is only once the signature verified."""
OTHER = "other"
"""The `event` label of verified events the guard does not need."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEvent:
    """One verified LiveKit event about a room, as the dispatch guard needs it. Room names and
    identities are callers' data: they stay out of `repr`, so out of any log line by accident."""

    event: EventType
    api_key: str
    """The API key LiveKit signed with: which credentials (so which AgentWorkers) it concerns."""
    room_name: str = field(repr=False)
    room_sid: str = field(repr=False)
    """The room's id; tells a room apart from a later one of the same name."""
    participant_identity: str | None = field(default=None, repr=False)
    """The participant's identity in participant_joined/left; None for room events."""
    participant_is_agent: bool | None = None
    """Whether that participant is an agent (kind AGENT); None for room events."""
    created_at_s: int = 0
    """Unix time in seconds LiveKit stamped the event with (deliveries may come out of order)."""


class WebhookRefused(Exception):
    """A request answered with an error `status`; `reason` is short and names no caller data."""

    def __init__(self, status: int, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.status, self.outcome, self.reason = status, outcome, reason


def build_app(
    secrets: Secrets,
    on_event: Callable[[WebhookEvent], None],
    *,
    serving: Callable[[], bool] = lambda: True,
) -> web.Application:
    """The aiohttp application serving POST `PATH`; while `serving()` is false (a standby) it
    answers 503 with Retry-After."""

    async def receive(request: web.Request) -> web.Response:
        return await _answer(request, secrets, on_event, serving)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    # every method reaches the handler, so that a wrong one is counted too
    app.router.add_route(hdrs.METH_ANY, PATH, receive)
    return app


async def serve_webhooks(
    host: str,
    port: int,
    secrets: Secrets,
    on_event: Callable[[WebhookEvent], None],
    *,
    serving: Callable[[], bool] = lambda: True,
) -> web.AppRunner:
    """Serve `build_app` on host:port until the returned runner's `cleanup()`."""
    runner = web.AppRunner(build_app(secrets, on_event, serving=serving), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _answer(
    request: web.Request,
    secrets: Secrets,
    on_event: Callable[[WebhookEvent], None],
    serving: Callable[[], bool],
) -> web.Response:
    label = UNVERIFIED
    try:
        if request.method != hdrs.METH_POST:
            raise WebhookRefused(405, Outcome.WRONG_METHOD, "only POST is allowed")
        if not serving():
            raise WebhookRefused(503, Outcome.STANDBY, "this replica stands by: try again")
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise WebhookRefused(413, Outcome.TOO_LARGE, "body too large")
        api_key, body_hash = _verify_token(request.headers.get(hdrs.AUTHORIZATION), secrets)
        body = await _read_body(request)
        _check_body(body, body_hash)
        event = _guard_event(_parse_event(body), api_key)
        if event is None:
            metrics.WEBHOOKS.labels(OTHER, Outcome.IGNORED.value).inc()
            return web.json_response({"ok": True})
        label = event.event.value
        on_event(event)
    except WebhookRefused as refused:
        metrics.WEBHOOKS.labels(label, refused.outcome.value).inc()
        logger.warning(
            "webhook refused",
            extra={
                "http_status": refused.status,
                "outcome": refused.outcome,
                "reason": refused.reason,
            },
        )
        headers = {hdrs.ALLOW: hdrs.METH_POST} if refused.status == 405 else None
        if refused.status == 503:
            headers = {hdrs.RETRY_AFTER: "1"}
        return web.json_response({"error": refused.reason}, status=refused.status, headers=headers)
    except Exception as error:
        # a bug on our side (a callback): answer 500 and keep serving. Type and place
        # only: the message or the traceback's values could carry a room name.
        metrics.WEBHOOKS.labels(label, Outcome.FAILED.value).inc()
        where = traceback.extract_tb(error.__traceback__)[-1]
        logger.error(
            "webhook handling failed",
            extra={
                "event": label,
                "error": type(error).__name__,
                "at": f"{Path(where.filename).name}:{where.lineno}",
            },
        )
        return web.json_response({"error": "internal error"}, status=500)
    metrics.WEBHOOKS.labels(label, Outcome.DELIVERED.value).inc()
    logger.debug("webhook delivered", extra={"event": label, "created_at_s": event.created_at_s})
    return web.json_response({"ok": True})


def _verify_token(authorization: str | None, secrets: Secrets) -> tuple[str, str]:
    """The API key that signed the token in `authorization`, and the body hash it vouches for.

    Raises `WebhookRefused` (401) for no token, a token that is not a JWT or names no key, an
    unknown key, a signature that does not verify, an expired token, or one without a body hash.
    """
    if not authorization:
        raise WebhookRefused(401, Outcome.UNSIGNED, "no Authorization header")
    # LiveKit sends the bare JWT; a proxy or a test client may add the scheme
    token = authorization.removeprefix("Bearer ").strip()
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise WebhookRefused(401, Outcome.BAD_TOKEN, "Authorization is not a JWT") from None
    api_key = unverified.get("iss")
    if not isinstance(api_key, str) or not api_key:
        raise WebhookRefused(401, Outcome.BAD_TOKEN, "token names no API key (iss)")
    secret = secrets(api_key)
    # an empty secret would make TokenVerifier fall back to $LIVEKIT_API_SECRET
    if not secret:
        raise WebhookRefused(401, Outcome.UNKNOWN_KEY, "unknown API key")
    try:
        claims = api.TokenVerifier(api_key, secret).verify(token)
    except jwt.ExpiredSignatureError:
        raise WebhookRefused(401, Outcome.BAD_TOKEN, "token expired") from None
    except jwt.InvalidTokenError:
        raise WebhookRefused(401, Outcome.BAD_TOKEN, "signature does not verify") from None
    except (ValueError, TypeError, AttributeError):
        # signed, but grants of a shape livekit-api cannot read
        raise WebhookRefused(401, Outcome.BAD_TOKEN, "token claims are malformed") from None
    if not claims.sha256:
        raise WebhookRefused(401, Outcome.BAD_TOKEN, "token carries no body hash (sha256)")
    return api_key, claims.sha256


def _check_body(body: bytes, body_hash: str) -> None:
    """Raises `WebhookRefused` (401) unless `body` hashes to `body_hash` (base64 of its SHA-256),
    the check livekit-api's WebhookReceiver makes."""
    try:
        claimed = base64.b64decode(body_hash, validate=True)
    except binascii.Error:
        claimed = b""
    if not hmac.compare_digest(hashlib.sha256(body).digest(), claimed):
        raise WebhookRefused(401, Outcome.BODY_MISMATCH, "body does not match the signed hash")


def _parse_event(body: bytes) -> webhook_pb.WebhookEvent:
    """The WebhookEvent in a verified body, parsed as WebhookReceiver does; `WebhookRefused` (400)
    when it is not one."""
    try:
        return json_format.Parse(
            body.decode("utf-8"), webhook_pb.WebhookEvent(), ignore_unknown_fields=True
        )
    # json.loads lets RecursionError through protobuf's ParseError on deep nesting
    except (UnicodeDecodeError, json_format.ParseError, RecursionError):
        raise WebhookRefused(400, Outcome.MALFORMED, "body is not a WebhookEvent in JSON") from None


def _guard_event(message: webhook_pb.WebhookEvent, api_key: str) -> WebhookEvent | None:
    """What the dispatch guard needs of `message`; None for events it does not need."""
    try:
        kind = EventType(message.event)
    except ValueError:
        return None
    if not message.room.name:
        return None
    joined = message.participant if message.HasField("participant") else None
    return WebhookEvent(
        event=kind,
        api_key=api_key,
        room_name=message.room.name,
        room_sid=message.room.sid,
        participant_identity=joined.identity if joined else None,
        participant_is_agent=joined.kind == models.ParticipantInfo.AGENT if joined else None,
        created_at_s=message.created_at,
    )


async def _read_body(request: web.Request) -> bytes:
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise WebhookRefused(413, Outcome.TOO_LARGE, "body too large") from None
    except TimeoutError:
        raise WebhookRefused(408, Outcome.TIMEOUT, "body not received in time") from None
    except (ConnectionError, ClientPayloadError):
        raise WebhookRefused(400, Outcome.INCOMPLETE, "body incomplete") from None


class Inbox:
    """Where verified webhooks go: the sync loop once it runs (`attach`), nowhere before. The
    endpoint starts before kopf and the sync loop, and a standby replica never attaches: a
    webhook it takes is answered 503 (`attached` is false), which LiveKit's webhook client
    retries, after a second and more, through the Service again (a 4xx it would drop). The
    chart's Service sends webhooks to the Lease holders only (the label `builders.
    LEASE_HOLDER_LABEL`), so a standby sees one only while a failover settles."""

    def __init__(self) -> None:
        self._secrets: Secrets | None = None
        self._on_event: Callable[[WebhookEvent], None] | None = None

    def attach(self, secrets: Secrets, on_event: Callable[[WebhookEvent], None]) -> None:
        self._secrets, self._on_event = secrets, on_event

    @property
    def attached(self) -> bool:
        return self._on_event is not None

    def secret(self, api_key: str) -> str | None:
        return self._secrets(api_key) if self._secrets is not None else None

    def deliver(self, event: WebhookEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

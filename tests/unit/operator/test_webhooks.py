"""LiveKit webhooks: signed events reach the guard, everything else is refused with its status.

Tokens are made as the LiveKit server makes them: livekit-api's AccessToken with the base64
SHA-256 of the body in its `sha256` claim, sent bare in the Authorization header.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from livekit import api
from livekit.protocol import models
from livekit.protocol import webhook as webhook_pb
from prometheus_client import REGISTRY

from agentworker_operator import __main__ as cli
from agentworker_operator import webhooks

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

KEY, SECRET = "APIvoice", "voice-secret-" + "x" * 32  # HS256 wants 32 bytes or more
OTHER_KEY, OTHER_SECRET = "APIsupport", "support-secret-" + "y" * 32
ROOM, ROOM_SID, IDENTITY = "call-4711-alice", "RM_abc", "agent-AJ_xyz"
CREATED_AT = 1_760_000_000
Client = TestClient[web.Request, web.Application]


class Guard:
    """The `secrets` and `on_event` a receiver is built with; records what it was handed."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {KEY: SECRET, OTHER_KEY: OTHER_SECRET}
        self.events: list[webhooks.WebhookEvent] = []
        self.fail = False

    def secret(self, api_key: str) -> str | None:
        return self.keys.get(api_key)

    def on_event(self, event: webhooks.WebhookEvent) -> None:
        if self.fail:
            raise RuntimeError(f"the guard broke on {event.room_name}")
        self.events.append(event)


@pytest.fixture
def guard() -> Guard:
    return Guard()


@pytest.fixture
async def client(guard: Guard) -> AsyncIterator[Client]:
    served: Client = TestClient(TestServer(webhooks.build_app(guard.secret, guard.on_event)))
    await served.start_server()
    yield served
    await served.close()


def event_body(
    event: str = "participant_joined", *, kind: models.ParticipantInfo.Kind | None = None
) -> bytes:
    """A WebhookEvent as the LiveKit server encodes it (protobuf JSON)."""
    message = webhook_pb.WebhookEvent(
        event=event,
        id="EV_1",
        created_at=CREATED_AT,
        room=models.Room(name=ROOM, sid=ROOM_SID),
    )
    if kind is not None:
        message.participant.CopyFrom(models.ParticipantInfo(identity=IDENTITY, kind=kind))
    return json_format.MessageToJson(message).encode()


def body_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def signed(
    body: bytes,
    *,
    key: str = KEY,
    secret: str = SECRET,
    ttl: datetime.timedelta = datetime.timedelta(minutes=5),
) -> str:
    """The Authorization header LiveKit sends with `body`."""
    return api.AccessToken(key, secret).with_sha256(body_hash(body)).with_ttl(ttl).to_jwt()


def count(event: str, outcome: webhooks.Outcome) -> float:
    labels = {"event": event, "outcome": outcome.value}
    return REGISTRY.get_sample_value("agentworker_webhooks_total", labels) or 0.0


async def post(client: Client, body: bytes, authorization: str | None) -> aiohttp.ClientResponse:
    headers = {"Content-Type": "application/webhook+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return await client.post(webhooks.PATH, data=body, headers=headers)


AGENT, STANDARD = models.ParticipantInfo.AGENT, models.ParticipantInfo.STANDARD


@pytest.mark.parametrize(
    ("event", "kind", "identity", "is_agent"),
    [
        ("room_started", None, None, None),
        ("participant_joined", AGENT, IDENTITY, True),
        ("participant_joined", STANDARD, IDENTITY, False),
        ("participant_left", AGENT, IDENTITY, True),
        ("room_finished", None, None, None),
    ],
    ids=["room-started", "agent-joined", "caller-joined", "agent-left", "room-finished"],
)
async def test_signed_event_is_delivered_with_what_the_guard_needs(
    client: Client,
    guard: Guard,
    event: str,
    kind: models.ParticipantInfo.Kind | None,
    identity: str | None,
    is_agent: bool | None,
) -> None:
    body = event_body(event, kind=kind)
    before = count(event, webhooks.Outcome.DELIVERED)
    response = await post(client, body, signed(body))
    assert response.status == 200, await response.text()
    assert guard.events == [
        webhooks.WebhookEvent(
            event=webhooks.EventType(event),
            api_key=KEY,
            room_name=ROOM,
            room_sid=ROOM_SID,
            participant_identity=identity,
            participant_is_agent=is_agent,
            created_at_s=CREATED_AT,
        )
    ]
    assert count(event, webhooks.Outcome.DELIVERED) == before + 1


async def test_each_event_is_verified_with_the_key_its_token_names(
    client: Client, guard: Guard
) -> None:
    body = event_body("room_started")
    for key, secret in ((KEY, SECRET), (OTHER_KEY, OTHER_SECRET)):
        response = await post(client, body, signed(body, key=key, secret=secret))
        assert response.status == 200, await response.text()
    assert [event.api_key for event in guard.events] == [KEY, OTHER_KEY]


async def test_a_bearer_scheme_before_the_token_is_accepted(client: Client, guard: Guard) -> None:
    body = event_body("room_started")
    response = await post(client, body, f"Bearer {signed(body)}")
    assert response.status == 200, await response.text()
    assert len(guard.events) == 1


async def test_verified_events_the_guard_does_not_need_are_answered_200_and_dropped(
    client: Client, guard: Guard
) -> None:
    body = event_body("track_published", kind=STANDARD)
    before = count(webhooks.OTHER, webhooks.Outcome.IGNORED)
    response = await post(client, body, signed(body))
    assert response.status == 200
    assert guard.events == []
    assert count(webhooks.OTHER, webhooks.Outcome.IGNORED) == before + 1


def without_iss(body: bytes) -> str:
    claims = {"sha256": body_hash(body), "exp": 4_000_000_000}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def without_hash(_: bytes) -> str:
    return api.AccessToken(KEY, SECRET).to_jwt()


# the Authorization sent for the event's body (None: no header), the body sent instead of it,
# the status and the outcome counted
Case = tuple[Callable[[bytes], str | None], Callable[[bytes], bytes], int, webhooks.Outcome]
REFUSALS: dict[str, Case] = {
    "no-authorization": (lambda b: None, lambda b: b, 401, webhooks.Outcome.UNSIGNED),
    "not-a-jwt": (lambda b: "not.a.jwt", lambda b: b, 401, webhooks.Outcome.BAD_TOKEN),
    "signed-with-another-secret": (
        lambda b: signed(b, secret=OTHER_SECRET),
        lambda b: b,
        401,
        webhooks.Outcome.BAD_TOKEN,
    ),
    "unknown-key": (
        lambda b: signed(b, key="APIstranger", secret=SECRET),
        lambda b: b,
        401,
        webhooks.Outcome.UNKNOWN_KEY,
    ),
    "no-iss": (without_iss, lambda b: b, 401, webhooks.Outcome.BAD_TOKEN),
    "expired": (
        lambda b: signed(b, ttl=datetime.timedelta(minutes=-5)),
        lambda b: b,
        401,
        webhooks.Outcome.BAD_TOKEN,
    ),
    "no-body-hash": (without_hash, lambda b: b, 401, webhooks.Outcome.BAD_TOKEN),
    "body-tampered-after-signing": (
        signed,
        lambda b: b.replace(ROOM.encode(), b"call-9999-mallory"),
        401,
        webhooks.Outcome.BODY_MISMATCH,
    ),
    "signed-but-not-json": (
        lambda b: signed(b"{not json"),
        lambda b: b"{not json",
        400,
        webhooks.Outcome.MALFORMED,
    ),
    "signed-but-not-utf8": (
        lambda b: signed(b"\xff\xfe"),
        lambda b: b"\xff\xfe",
        400,
        webhooks.Outcome.MALFORMED,
    ),
    "signed-but-too-large": (
        lambda b: signed(b"x" * (webhooks.MAX_BODY_BYTES + 1)),
        lambda b: b"x" * (webhooks.MAX_BODY_BYTES + 1),
        413,
        webhooks.Outcome.TOO_LARGE,
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_requests_get_their_status_and_deliver_nothing(
    client: Client, guard: Guard, case: str
) -> None:
    authorization, sent, status, outcome = REFUSALS[case]
    body = event_body("participant_joined", kind=AGENT)
    before = count(webhooks.UNVERIFIED, outcome)
    response = await post(client, sent(body), authorization(body))
    assert response.status == status
    assert (await response.json())["error"]
    assert guard.events == []
    assert count(webhooks.UNVERIFIED, outcome) == before + 1


async def test_an_empty_secret_is_an_unknown_key_not_the_environments(
    client: Client, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # livekit-api's TokenVerifier reads $LIVEKIT_API_SECRET when handed an empty secret
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    guard.keys[KEY] = ""
    body = event_body("room_started")
    response = await post(client, body, signed(body))
    assert response.status == 401
    assert guard.events == []


async def test_a_chunked_body_over_the_limit_is_refused_413(client: Client, guard: Guard) -> None:
    body = b"x" * (webhooks.MAX_BODY_BYTES + 1)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the read enforces the limit
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await client.post(
        webhooks.PATH, data=chunks(), headers={"Authorization": signed(body)}
    )
    assert response.status == 413
    assert guard.events == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_refused_405_naming_post(
    client: Client, guard: Guard, method: str
) -> None:
    response = await client.request(method, webhooks.PATH)
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


async def test_a_failing_guard_is_answered_500_and_logged_without_the_room(
    client: Client, guard: Guard, caplog: pytest.LogCaptureFixture
) -> None:
    guard.fail = True
    body = event_body("room_started")
    with caplog.at_level(logging.DEBUG, logger=webhooks.__name__):
        response = await post(client, body, signed(body))
        response_again = await post(client, body, signed(body))
    assert (response.status, response_again.status) == (500, 500), "it keeps serving"
    (first, _) = [r for r in caplog.records if r.getMessage() == "webhook handling failed"]
    assert vars(first)["error"] == "RuntimeError"
    assert ROOM not in logged(caplog.records)


def logged(records: list[logging.LogRecord]) -> str:
    """Everything log lines carried: messages and every extra."""
    return " ".join(f"{r.getMessage()} {vars(r)}" for r in records)


async def test_logs_never_carry_the_body_the_token_or_room_names(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    body = event_body("participant_joined", kind=AGENT)
    token = signed(body)
    with caplog.at_level(logging.DEBUG, logger=webhooks.__name__):
        await post(client, body, token)
        await post(client, body.replace(ROOM.encode(), b"call-1"), token)
        await post(client, body, signed(body, secret=OTHER_SECRET))
    assert len(caplog.records) == 3
    text = logged(caplog.records)
    for secret_or_data in (ROOM, IDENTITY, token, SECRET, body.decode()):
        assert secret_or_data not in text


def test_an_events_repr_leaves_out_room_and_participant() -> None:
    event = webhooks.WebhookEvent(
        event=webhooks.EventType.PARTICIPANT_JOINED,
        api_key=KEY,
        room_name=ROOM,
        room_sid=ROOM_SID,
        participant_identity=IDENTITY,
        participant_is_agent=True,
        created_at_s=CREATED_AT,
    )
    assert ROOM not in repr(event)
    assert IDENTITY not in repr(event)


async def test_a_body_that_never_arrives_is_refused_408(
    client: Client, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "READ_TIMEOUT_S", 0.1)
    body = event_body("room_started")
    stalled = asyncio.Event()

    async def stall() -> AsyncIterator[bytes]:
        yield body[:10]
        await stalled.wait()  # set once the answer came: the rest never arrives in time

    headers = {"Authorization": signed(body), "Content-Length": str(len(body))}
    try:
        response = await client.post(webhooks.PATH, data=stall(), headers=headers)
    finally:
        stalled.set()
    assert response.status == 408
    assert guard.events == []


async def test_serve_webhooks_listens_on_its_port_until_cleanup(guard: Guard) -> None:
    runner = await webhooks.serve_webhooks("127.0.0.1", 0, guard.secret, guard.on_event)
    try:
        host, port = runner.addresses[0][:2]
        body = event_body("room_started")
        url = f"http://{host}:{port}{webhooks.PATH}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers={"Authorization": signed(body)}) as answer,
        ):
            assert answer.status == 200
    finally:
        await runner.cleanup()
    assert len(guard.events) == 1


def test_the_webhook_endpoint_is_off_unless_a_port_is_given() -> None:
    assert cli.parse_args([]).webhook_port == 0
    config = cli.parse_args(["--webhook-port=8082", "--webhook-host=10.0.0.7"])
    assert (config.webhook_host, config.webhook_port) == ("10.0.0.7", 8082)


@pytest.mark.parametrize("taken", ["--health-port=8082", "--metrics-port=8082"])
def test_the_webhook_port_may_not_be_the_health_or_metrics_port(
    taken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--webhook-port=8082", taken])
    assert "--webhook-port 8082" in capsys.readouterr().err


async def test_a_standby_answers_503_so_that_livekit_asks_again(guard: Guard) -> None:
    # LiveKit's webhook client (go-retryablehttp's default policy) retries a 5xx and drops a
    # 4xx: a standby that answered 401 lost the event
    leading = False
    app = webhooks.build_app(guard.secret, guard.on_event, serving=lambda: leading)
    served: Client = TestClient(TestServer(app))
    await served.start_server()
    try:
        body = event_body("room_started")
        before = count(webhooks.UNVERIFIED, webhooks.Outcome.STANDBY)
        response = await post(served, body, signed(body))
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert guard.events == []
        assert count(webhooks.UNVERIFIED, webhooks.Outcome.STANDBY) == before + 1
        leading = True  # it took the Lease: the same delivery, asked again, goes through
        response = await post(served, body, signed(body))
        assert response.status == 200, await response.text()
        assert [e.event for e in guard.events] == [webhooks.EventType.ROOM_STARTED]
    finally:
        await served.close()


def test_the_inbox_serves_once_the_sync_loop_attached() -> None:
    inbox = webhooks.Inbox()
    assert not inbox.attached
    inbox.attach(lambda key: None, lambda event: None)
    assert inbox.attached

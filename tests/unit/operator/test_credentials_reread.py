"""The LiveKit credentials in the operator (call recovery, the dispatch guard, webhooks): read from
the credentials Secret once, kept until LiveKit refuses or does not answer, then read again
(`Syncer._livekit`, `Syncer._unreachable`). docs/install.md's credential rotation rests on this.

Private methods, as in test_stale_watch: the sync loop around them needs workers and a LiveKit.
"""

from __future__ import annotations

from typing import Any, cast

from agentworker_operator import builders, kube, rooms
from agentworker_operator import spec as specs
from agentworker_operator import sync as syncs
from agentworker_operator.settings import SyncSettings
from agentworker_operator.store import Key, Store
from tests.unit.operator.test_spec import with_

OWNER = builders.Owner(name="support", namespace="team-a", uid="0000-1111")
KEY: Key = (OWNER.namespace, OWNER.name)
BODY = {"metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid}}
SPEC = specs.parse_spec(with_("livekit.credentialsSecret.name", "livekit-credentials"))
OLD = {"LIVEKIT_API_KEY": "APIold", "LIVEKIT_API_SECRET": "old-secret"}
NEW = {"LIVEKIT_API_KEY": "APInew", "LIVEKIT_API_SECRET": "new-secret"}


class SecretReader:
    """The credentials Secret as the API server serves it (`Kube.secret_values`), counted."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.reads = 0

    async def secret_values(self, namespace: str, name: str) -> dict[str, str]:
        assert (namespace, name) == (OWNER.namespace, "livekit-credentials")
        self.reads += 1
        return dict(self.values)


class Client:
    """A LiveKit API client (`rooms.Rooms`) that remembers the credentials it was made with."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


async def never_reconciled(key: Key, trigger: str, full: bool) -> None:
    raise AssertionError("not reconciled here")


def syncer(secret: SecretReader) -> syncs.Syncer:
    return syncs.Syncer(
        client=cast(kube.Kube, secret),
        store=Store(),
        config=SyncSettings(),
        reconcile=never_reconciled,
        locks={},
        control_key=b"key",
        rooms_client=cast(syncs.RoomsClient, Client),
    )


async def client_of(made: syncs.Syncer, fleet: syncs.Fleet) -> Any:
    return await made._livekit(KEY, BODY, SPEC, fleet)


async def test_new_values_in_the_secret_are_read_once_livekit_refused_the_old_ones() -> None:
    secret = SecretReader(OLD)
    made = syncer(secret)
    fleet = syncs.Fleet()
    first = await client_of(made, fleet)
    assert (first.api_key, first.api_secret) == ("APIold", "old-secret")

    secret.values = NEW  # rotated in place
    assert await client_of(made, fleet) is first, "kept while LiveKit accepts it"
    assert secret.reads == 1

    refused = rooms.RoomsError("LiveKit refused the API key and secret (401)")
    await made._unreachable(KEY, fleet, "call recovery", refused)
    assert first.closed
    second = await client_of(made, fleet)
    assert (second.api_key, second.api_secret) == ("APInew", "new-secret")
    assert secret.reads == 2
    await made.aclose()


async def test_webhooks_signed_with_either_key_verify_after_a_rotation_until_a_restart() -> None:
    secret = SecretReader(OLD)
    made = syncer(secret)
    fleet = syncs.Fleet()
    await client_of(made, fleet)
    assert made.webhook_secret("APInew") is None, "a key not read yet is refused"

    secret.values = NEW
    await made._unreachable(KEY, fleet, "the dispatch guard", rooms.RoomsError("timed out"))
    await client_of(made, fleet)
    assert made.webhook_secret("APInew") == "new-secret"
    assert made.webhook_secret("APIold") == "old-secret", "kept until the operator restarts"
    await made.aclose()

"""Leader election by client-go's rules: expiry by the local clock from the last change seen;
with shards, one Lease per shard, each process holding the first free one and no more."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any, cast

import pytest

from agentworker_operator import kube, lease, settings, sharding

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def held_by(holder: str, renew_time: str = "2026-11-23T10:00:00.000000Z") -> dict[str, object]:
    return {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew_time}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, True, id="free"),
        pytest.param({"holderIdentity": ""}, True, id="released"),
        pytest.param(held_by("me"), True, id="mine"),
    ],
)
def test_a_free_or_own_lease_may_be_taken_at_once(spec: dict[str, object], expected: bool) -> None:
    assert lease.may_take(spec, "me", None, 0.0) is expected


def test_another_holders_lease_is_never_taken_on_first_sight() -> None:
    spec = held_by("other", "2020-01-01T00:00:00.000000Z")  # an ancient renewTime: no matter
    assert not lease.may_take(spec, "me", None, 1000.0)
    seen = lease.observe(None, spec, 1000.0)
    assert not lease.may_take(spec, "me", seen, 1000.0)


def test_expiry_counts_from_when_the_record_was_last_seen_to_change_by_the_local_clock() -> None:
    first = held_by("other", "2026-11-23T10:00:00.000000Z")
    seen = lease.observe(None, first, 100.0)
    assert lease.observe(seen, first, 110.0) is seen, "an unchanged record keeps its time"
    assert not lease.may_take(first, "me", seen, 114.0)
    assert lease.may_take(first, "me", seen, 115.5)
    renewed = held_by("other", "2026-11-23T10:00:05.000000Z")
    seen_again = lease.observe(seen, renewed, 115.5)
    assert seen_again.at_s == 115.5
    assert not lease.may_take(renewed, "me", seen_again, 116.0), "a renewal restarts the count"


def test_a_holder_clock_far_in_the_future_does_not_keep_the_lease_forever() -> None:
    spec = held_by("other", "2099-01-01T00:00:00.000000Z")
    seen = lease.observe(None, spec, 0.0)
    assert lease.may_take(spec, "me", seen, 16.0)


class FakeLeases:
    """The API server's Leases, as `lease` uses them: GET (None when missing), POST (409 when
    it exists), PUT (409 on a stale resourceVersion); names in `refused` answer 403."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.refused: set[str] = set()
        self.writes: list[str] = []
        self._version = 0

    def holder(self, name: str) -> str:
        return str((self.objects.get(name) or {}).get("spec", {}).get("holderIdentity") or "")

    def _name(self, path: str) -> str:
        name = path.rsplit("/", 1)[1]
        if name in self.refused:
            raise kube.KubeError(403, "Forbidden", f"leases {name} is forbidden")
        return name

    async def get(self, path: str) -> dict[str, Any] | None:
        found = self.objects.get(self._name(path))
        return copy.deepcopy(found) if found is not None else None

    async def request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        name = self._name(f"{path}/{body['metadata']['name']}" if method == "POST" else path)
        stored = self.objects.get(name)
        if method == "POST" and stored is not None:
            raise kube.Conflict(409, "AlreadyExists", f"leases {name} already exists")
        if method == "PUT" and (
            stored is None
            or body["metadata"].get("resourceVersion") != stored["metadata"]["resourceVersion"]
        ):
            raise kube.Conflict(409, "Conflict", f"leases {name}: the object has been modified")
        self._version += 1
        written = copy.deepcopy(body)
        written["metadata"]["resourceVersion"] = str(self._version)
        self.objects[name] = written
        self.writes.append(name)
        return copy.deepcopy(written)


BASE = "agentworker-operator"
SHARD_0, SHARD_1 = f"{BASE}-shard-0", f"{BASE}-shard-1"


class Process:
    """One operator process's ShardLeases against the fake API, on a clock the test moves."""

    def __init__(self, api: FakeLeases, identity: str, shards: int, clock: list[float]) -> None:
        config = settings.LeaseSettings(
            name=BASE, namespace="ops", identity=identity, duration_s=15.0, renew_every_s=0.01
        )
        self.identity = identity
        self.leases = lease.ShardLeases(
            cast(kube.Kube, api), config, shards=shards, monotonic=lambda: clock[0]
        )

    async def take(self) -> int | None:
        shard = await self.leases.try_acquire()
        return shard.index if shard is not None else None


def identities_starting_at(index: int, shards: int) -> list[str]:
    """Identities whose own order tries shard `index` first."""
    candidates = (f"replica-{i}" for i in range(100))
    return [name for name in candidates if sharding.lease_order(name, shards)[0] == index]


def identity_starting_at(index: int, shards: int) -> str:
    return identities_starting_at(index, shards)[0]


async def test_one_shard_keeps_the_one_leader_lease_of_an_installation_not_split() -> None:
    api, clock = FakeLeases(), [0.0]
    only = Process(api, "replica-a", 1, clock)
    assert await only.take() == 0
    assert list(api.objects) == [BASE]
    assert only.leases.shard == sharding.WHOLE
    assert only.leases.holder == "replica-a"


async def test_three_processes_two_shards_each_shard_one_holder_and_the_third_stands_by() -> None:
    api, clock = FakeLeases(), [0.0]
    first, second = (Process(api, name, 2, clock) for name in identities_starting_at(0, 2)[:2])
    third = Process(api, "replica-c", 2, clock)
    taken = {await first.take(), await second.take()}
    assert taken == {0, 1}, "the second finds the first's shard held and takes the other"
    assert await third.take() is None
    assert third.leases.holders == {
        SHARD_0: api.holder(SHARD_0),
        SHARD_1: api.holder(SHARD_1),
    }
    assert {api.holder(SHARD_0), api.holder(SHARD_1)} == {first.identity, second.identity}
    assert third.leases.shard is None
    assert not third.leases.held


async def test_a_holder_renews_its_own_shard_and_never_takes_a_second() -> None:
    api, clock = FakeLeases(), [0.0]
    holder = Process(api, identity_starting_at(1, 2), 2, clock)
    assert await holder.take() == 1
    api.writes.clear()
    for _ in range(3):
        assert await holder.take() == 1
    assert api.writes == [SHARD_1] * 3, "renewals of its own Lease only"
    assert SHARD_0 not in api.objects, "the free shard stays for another process"


async def test_a_standby_takes_the_shard_whose_holder_stopped_renewing_by_its_own_clock() -> None:
    api, clock = FakeLeases(), [0.0]
    alive = Process(api, identity_starting_at(0, 2), 2, clock)
    dead = Process(api, identity_starting_at(1, 2), 2, clock)
    standby = Process(api, "replica-standby", 2, clock)
    assert (await alive.take(), await dead.take()) == (0, 1)
    for now in (0.0, 5.0, 10.0, 15.0):
        clock[0] = now
        assert await alive.take() == 0  # the live holder renews; the dead one does not
        assert await standby.take() is None, f"{now} s: not expired yet"
    clock[0] = 15.5
    assert await standby.take() == 1, "shard 1's record has not changed for 15 s"
    assert api.holder(SHARD_1) == "replica-standby"
    assert api.holder(SHARD_0) == alive.identity


async def test_a_released_shard_is_taken_at_once() -> None:
    api, clock = FakeLeases(), [0.0]
    holder = Process(api, identity_starting_at(0, 2), 2, clock)
    other = Process(api, identity_starting_at(1, 2), 2, clock)
    standby = Process(api, "replica-standby", 2, clock)
    assert (await holder.take(), await other.take(), await standby.take()) == (0, 1, None)
    await holder.leases.release()
    assert await standby.take() == 0


async def test_a_lease_the_api_server_refuses_is_passed_over_for_the_next() -> None:
    api, clock = FakeLeases(), [0.0]
    api.refused.add(SHARD_0)
    process = Process(api, identity_starting_at(0, 2), 2, clock)
    assert await process.take() == 1
    late = Process(api, "replica-late", 2, clock)
    with pytest.raises(kube.KubeError, match="forbidden"):
        await late.take()  # shard 1 held, shard 0 unreadable: nothing taken, the error said


async def test_acquire_stands_by_naming_every_holder_until_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, clock = FakeLeases(), [0.0]
    for index in (0, 1):
        assert await Process(api, identity_starting_at(index, 2), 2, clock).take() == index
    standby = Process(api, "replica-standby", 2, clock)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with caplog.at_level(logging.INFO, logger="agentworker_operator.lease"):
        assert not await standby.leases.acquire(stop)
    assert standby.leases.reachable
    (line,) = [r for r in caplog.records if r.getMessage().startswith("standing by")]
    assert line.getMessage() == "standing by: other replicas hold every shard's lease"
    assert line.__dict__["holders"] == standby.leases.holders, "said once, not every pass"


async def test_with_one_shard_a_standby_names_the_leader_as_it_always_has(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, clock = FakeLeases(), [0.0]
    assert await Process(api, "replica-a", 1, clock).take() == 0
    standby = Process(api, "replica-b", 1, clock)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with caplog.at_level(logging.INFO, logger="agentworker_operator.lease"):
        assert not await standby.leases.acquire(stop)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("standing by")]
    assert line.getMessage() == "standing by: another replica holds the leader lease"
    assert (line.__dict__["holder"], line.__dict__["lease"]) == ("replica-a", BASE)
    assert standby.leases.holder == "replica-a"

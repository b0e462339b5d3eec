"""Leader election with a coordination.k8s.io/v1 Lease, by client-go's rules.

kopf's peering is priority-based pausing, not leader election (equal priorities freeze, and an
old pod can pause the new one during a rollout, kopf #734), so the operator holds a Lease of its
own, as client-go's leaderelection does:
- a standby judges expiry by its own clock, from when it last saw the Lease record change, never
  from the holder's renewTime (clocks differ between nodes);
- the holder stops acting when it could not renew within its renew deadline, which is shorter
  than the Lease duration, so it has stopped before any standby may take over;
- writes carry the Lease's resourceVersion, so two replicas can never both win;
- a failed request (a dropped keep-alive connection, a 5xx) is retried, not fatal.
An installation split in shards (`sharding`) has one such Lease per shard: a process takes the
first free one in its own order and holds that one only; until then it stands by for them all.
This module owns the Leases and nothing else; it never touches AgentWorkers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from agentworker_operator import kube, settings, sharding

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
Monotonic = Callable[[], float]
TRANSIENT = (kube.KubeError, OSError, TimeoutError, aiohttp.ClientError)
"""What a Lease request may fail with and be tried again: API refusals, dropped connections."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """A Lease record as this replica last saw it change, and when, by its own clock."""

    record: tuple[object, ...]
    """holderIdentity, renewTime, acquireTime, leaseDurationSeconds, leaseTransitions."""
    at_s: float
    """Local monotonic seconds when this record was first seen."""


def record_of(spec: Mapping[str, Any]) -> tuple[object, ...]:
    """The fields whose change shows the holder is alive."""
    keys = ("holderIdentity", "renewTime", "acquireTime", "leaseDurationSeconds")
    return (*(spec.get(key) for key in keys), spec.get("leaseTransitions"))


def observe(previous: Observed | None, spec: Mapping[str, Any], now_s: float) -> Observed:
    """The observation after reading `spec`: its time moves only when the record changed."""
    record = record_of(spec)
    if previous is not None and previous.record == record:
        return previous
    return Observed(record=record, at_s=now_s)


def may_take(
    spec: Mapping[str, Any], identity: str, observed: Observed | None, now_s: float
) -> bool:
    """Whether `identity` may write itself as holder: it holds it, or it is free, or its
    record has not changed for leaseDurationSeconds by this replica's clock."""
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    duration = spec.get("leaseDurationSeconds")
    if not isinstance(duration, int) or observed is None or observed.record != record_of(spec):
        return False  # not seen unchanged for long enough yet
    return now_s - observed.at_s > duration


class LeaderLease:
    """This replica's claim on one Lease: take it (`try_acquire`), hold it (renew), release it.
    `ShardLeases` waits for one of them."""

    def __init__(
        self,
        client: kube.Kube,
        config: settings.LeaseSettings,
        *,
        clock: Clock = _utcnow,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._client = client
        self._config = config
        self._clock = clock
        self._monotonic = monotonic
        self._path = kube.path_of("coordination.k8s.io/v1", "Lease", config.namespace, config.name)
        self._observed: Observed | None = None
        self.held = False
        self.holder = ""
        """Who holds the Lease, as last read ("" when free or unknown)."""

    @property
    def name(self) -> str:
        """The Lease's name."""
        return self._config.name

    @property
    def renew_deadline_s(self) -> float:
        """The holder gives up after failing to renew this long: before any standby may take."""
        return self._config.duration_s * 2 / 3

    def _claim(self, current: Mapping[str, Any] | None) -> dict[str, Any]:
        now = _micro_time(self._clock())
        old = (current or {}).get("spec") or {}
        same_holder = old.get("holderIdentity") == self._config.identity
        transitions = int(old.get("leaseTransitions") or 0) + (0 if same_holder else 1)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self._config.name,
                "namespace": self._config.namespace,
                **({"resourceVersion": current["metadata"]["resourceVersion"]} if current else {}),
            },
            "spec": {
                "holderIdentity": self._config.identity,
                "leaseDurationSeconds": int(self._config.duration_s),
                "acquireTime": old.get("acquireTime") if same_holder else now,
                "renewTime": now,
                "leaseTransitions": transitions if current else 0,
            },
        }

    async def try_acquire(self) -> bool:
        """One attempt to become (or stay) the holder; False when another replica holds it."""
        current = await self._client.get(self._path)
        spec = (current or {}).get("spec") or {}
        now_s = self._monotonic()
        self._observed = observe(self._observed, spec, now_s)
        self.holder = str(spec.get("holderIdentity") or "")
        try:
            if current is None:
                collection = self._path.rsplit("/", 1)[0]
                await self._client.request("POST", collection, body=self._claim(None))
            elif may_take(spec, self._config.identity, self._observed, now_s):
                await self._client.request("PUT", self._path, body=self._claim(current))
            else:
                return False
        except kube.Conflict:
            return False  # someone else wrote first: read again next time
        self.held = True
        self.holder = self._config.identity
        return True

    async def hold(self) -> None:
        """Renew until the claim is lost or the renew deadline passes (returns), or cancelled."""
        last_renewal = self._monotonic()
        while True:
            await asyncio.sleep(self._config.renew_every_s)
            left_s = self.renew_deadline_s - (self._monotonic() - last_renewal)
            try:
                async with asyncio.timeout(max(0.1, left_s)):
                    renewed = await self.try_acquire()
                if not renewed:
                    break
                last_renewal = self._monotonic()
            except TRANSIENT as error:
                logger.warning("leader lease renewal failed", extra={"error": str(error)})
            if self._monotonic() - last_renewal >= self.renew_deadline_s:
                break
        self.held = False
        logger.error(
            "leader lease lost: stopping before a standby may take over",
            extra={"identity": self._config.identity, "holder": self.holder, "lease": self.name},
        )

    async def release(self) -> None:
        """Give the Lease up at once so a standby need not wait for it to expire."""
        if not self.held:
            return
        self.held = False
        try:
            current = await self._client.get(self._path)
            spec = (current or {}).get("spec") or {}
            if current is None or spec.get("holderIdentity") != self._config.identity:
                return
            released = self._claim(current)
            released["spec"]["leaseDurationSeconds"] = 1
            released["spec"]["holderIdentity"] = ""
            await self._client.request("PUT", self._path, body=released)
        except TRANSIENT as error:
            logger.warning("leader lease release failed", extra={"error": str(error)})
        else:
            logger.info("leader lease released", extra={"identity": self._config.identity})


class ShardLeases:
    """This process's side of the installation's Leases, one per shard (`sharding`): it takes
    the first one free in its own order (`sharding.lease_order`), so that processes starting
    together mostly try different ones first, and holds that one as `LeaderLease` does. Until
    then it stands by for every one, judging each one's expiry by its own clock. One shard: the
    one Lease named `config.name`, as an installation that is not split has."""

    def __init__(
        self,
        client: kube.Kube,
        config: settings.LeaseSettings,
        *,
        shards: int = 1,
        clock: Clock = _utcnow,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._shards = shards
        self._identity = config.identity
        self._renew_every_s = config.renew_every_s
        self._leases = [
            (
                index,
                LeaderLease(
                    client,
                    dataclasses.replace(
                        config, name=sharding.lease_name(config.name, index, shards)
                    ),
                    clock=clock,
                    monotonic=monotonic,
                ),
            )
            for index in sharding.lease_order(config.identity, shards)
        ]
        self._held: LeaderLease | None = None
        self.shard: sharding.Shard | None = None
        """The shard whose Lease this process took (None while it stands by)."""
        self.reachable = True
        """The last attempt got an answer from the API server for every Lease (a standby that
        cannot read or write them is not ready)."""

    @property
    def held(self) -> bool:
        """Whether this process holds its shard's Lease (False again once it lost it)."""
        return self._held is not None and self._held.held

    @property
    def holder(self) -> str:
        """Who holds the Lease this process holds, or, with one shard, waits for ("" for a
        standby of many shards: `holders` names them)."""
        if self._held is not None:
            return self._held.holder
        return self._leases[0][1].holder if self._shards == 1 else ""

    @property
    def holders(self) -> dict[str, str]:
        """Each Lease's holder as last read ("" when free or unknown), by Lease name."""
        ordered = sorted(self._leases, key=lambda pair: pair[0])
        return {candidate.name: candidate.holder for _, candidate in ordered}

    async def try_acquire(self) -> sharding.Shard | None:
        """One pass over the Leases in this process's order: the shard of the first one it
        took, or None when others hold every one. A Lease the API server did not answer for is
        passed over; when none was taken, the first such error is raised. Once this process
        holds one, a pass renews that one only: a process never holds two shards."""
        if self._held is not None:
            return self.shard if await self._held.try_acquire() else None
        failure: Exception | None = None
        for index, candidate in self._leases:
            try:
                if await candidate.try_acquire():
                    self._held = candidate
                    self.shard = sharding.Shard(index=index, count=self._shards)
                    return self.shard
            except TRANSIENT as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds a shard's Lease (True) or `stop` is set (False)."""
        told: dict[str, str] = {}
        while not stop.is_set():
            try:
                shard = await self.try_acquire()
                self.reachable = True
                if shard is not None:
                    self._say_acquired(shard)
                    return True
                if self.holders != told:
                    told = self.holders
                    self._say_standing_by(told)
            except TRANSIENT as error:
                self.reachable = False
                logger.warning("leader lease unavailable", extra={"error": str(error)})
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._renew_every_s)
            except TimeoutError:
                continue
        return False

    def _say_acquired(self, shard: sharding.Shard) -> None:
        assert self._held is not None
        extra: dict[str, object] = {"identity": self._identity, "lease": self._held.name}
        if self._shards > 1:
            extra.update(shard=shard.index, shards=shard.count)
        logger.info("leader lease acquired", extra=extra)

    def _say_standing_by(self, holders: dict[str, str]) -> None:
        if self._shards == 1:
            ((name, holder),) = holders.items()
            logger.info(
                "standing by: another replica holds the leader lease",
                extra={"holder": holder, "lease": name},
            )
        else:
            logger.info(
                "standing by: other replicas hold every shard's lease", extra={"holders": holders}
            )

    async def hold(self) -> None:
        """Renew the shard's Lease until it is lost (returns), or cancelled (`LeaderLease`)."""
        if self._held is None:
            raise RuntimeError("hold() before acquire(): this process holds no Lease")
        await self._held.hold()

    async def release(self) -> None:
        """Give the shard's Lease up at once, so a standby need not wait for it to expire."""
        if self._held is not None:
            await self._held.release()

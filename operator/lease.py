"""Leader election with a coordination.k8s.io/v1 Lease, so two replicas never both act.

kopf's peering is priority-based pausing, not leader election (equal priorities freeze, and an
old pod can pause the new one during a rollout, kopf #734), so the operator holds a Lease of its
own, as client-go's leaderelection does: a standby takes the Lease only when it is free or its
holder stopped renewing for `duration_s`; writes use the Lease's resourceVersion, so two
replicas can never both win. This module owns the Lease and nothing else; it never touches
AgentWorkers.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agentworker_operator import kube, settings

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: object) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def may_take(spec: Mapping[str, Any], identity: str, now: datetime.datetime) -> bool:
    """Whether `identity` may write itself as holder: it holds it, or it is free or expired."""
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return True
    return now > renewed + datetime.timedelta(seconds=duration)


class LeaderLease:
    """This replica's claim on the Lease: acquire, hold (renew), release."""

    def __init__(
        self, client: kube.Kube, config: settings.LeaseSettings, *, clock: Clock = _utcnow
    ) -> None:
        self._client = client
        self._config = config
        self._clock = clock
        self._path = kube.path_of("coordination.k8s.io/v1", "Lease", config.namespace, config.name)
        self.held = False

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
        try:
            if current is None:
                collection = self._path.rsplit("/", 1)[0]
                await self._client.request("POST", collection, body=self._claim(None))
            elif may_take(current.get("spec") or {}, self._config.identity, self._clock()):
                await self._client.request("PUT", self._path, body=self._claim(current))
            else:
                return False
        except kube.Conflict:
            return False
        self.held = True
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica holds the Lease (True) or `stop` is set (False)."""
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    logger.info("leader lease acquired", extra={"identity": self._config.identity})
                    return True
            except (kube.KubeError, OSError, TimeoutError) as error:
                logger.warning("leader lease unavailable", extra={"error": str(error)})
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._config.renew_every_s)
            except TimeoutError:
                continue
        return False

    async def hold(self) -> None:
        """Renew until the claim is lost (returns) or the task is cancelled."""
        last_renewal = self._clock()
        while True:
            await asyncio.sleep(self._config.renew_every_s)
            try:
                if not await self.try_acquire():
                    break
                last_renewal = self._clock()
            except (kube.KubeError, OSError, TimeoutError) as error:
                logger.warning("leader lease renewal failed", extra={"error": str(error)})
                age_s = (self._clock() - last_renewal).total_seconds()
                if age_s >= self._config.duration_s:
                    break
        self.held = False
        logger.error("leader lease lost", extra={"identity": self._config.identity})

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
        except (kube.KubeError, OSError, TimeoutError) as error:
            logger.warning("leader lease release failed", extra={"error": str(error)})
        else:
            logger.info("leader lease released", extra={"identity": self._config.identity})

"""Which operator process handles which AgentWorker when an installation runs in shards.

One installation may split its AgentWorkers among N processes (`--shards N`). Each process holds
one of N Leases, `<lease-name>-shard-<i>`, and handles exactly the AgentWorkers whose `shard_of`
is its i: their handlers, sync rounds, long polls, dispatch guard, call recovery and metrics.
The split hashes namespace and name together, so one large namespace spreads too, and it is
stable: every process, whatever its version or start time, puts an AgentWorker in the same
shard. With one shard (the default) there is one Lease, `<lease-name>`, and every AgentWorker is
the process's.

This module owns that split, the shards' Lease names and the order a process tries them in. It
is pure: no I/O, no clock, no kopf, kubernetes, aiohttp or prometheus_client; who holds which
Lease is `lease`'s business.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def _hash(text: str) -> int:
    """The first 8 bytes of the SHA-256 of `text`, as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard (0 to shards - 1) of the AgentWorker namespace/name among `shards`."""
    if shards < 1:
        raise ValueError(f"shards: {shards} is not a number of shards like 1 or more")
    return _hash(f"{namespace}/{name}") % shards


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    """The part of the installation's AgentWorkers one process handles."""

    index: int = 0
    """This shard's number, 0 to count - 1."""
    count: int = 1
    """How many shards the installation has (`--shards`); 1: one process handles every one."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count: {self.count} is not a number of shards like 1 or more")
        if not 0 <= self.index < self.count:
            raise ValueError(f"index: {self.index} is not a shard of 0 to {self.count - 1}")

    def owns(self, key: tuple[str, str]) -> bool:
        """Whether the AgentWorker `key` (namespace, name) is this shard's: the one place that
        says so, for the handlers, the sync loop and whatever they feed."""
        return self.count == 1 or shard_of(key[0], key[1], self.count) == self.index


WHOLE = Shard()
"""The one shard of an installation that is not split: it owns every AgentWorker."""


def lease_name(base: str, index: int, shards: int) -> str:
    """The name of shard `index`'s Lease: `base` itself when there is one shard."""
    return base if shards == 1 else f"{base}-shard-{index}"


def lease_order(identity: str, shards: int) -> list[int]:
    """The shards in the order the process `identity` tries their Leases: from one its identity
    picks, onwards, so that processes starting together mostly try different ones first."""
    start = _hash(identity) % shards
    return [(start + step) % shards for step in range(shards)]

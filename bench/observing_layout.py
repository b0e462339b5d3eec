"""The observing benchmark's sides: how many operator processes each runs, and with which shards.

This module owns the sides a run may choose (`side`: the operator as it ships, the same with
`--no-worker-watch`, one process titled for a comparison with shards, and `shards-N`: N
processes started at once with `--shards N`), which AgentWorkers each shard handles (the
operator's own `agentworker_operator.sharding.shard_of`, so the benchmark's split is the one the
processes use), and the check that a side's processes hold distinct shards and handle exactly
their own AgentWorkers (`misplaced`), from what each process's /metrics says. Pure: no I/O, no
clock; `bench.observing_sides` gathers the metrics and runs the processes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentworker_operator import sharding
from bench import fake_fleet
from bench.fake_fleet import FleetShape

MAX_SHARDS = 8
"""The most shards a side may have: each is a process on a 2-core machine."""
SHARDED = re.compile(r"shards-(\d+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    """An operator configuration measured: its processes, all started at once."""

    key: str
    title: str
    """Its column's title."""
    operator_args: tuple[str, ...]
    """Appended to each process's command line."""
    processes: int = 1
    """Operator processes, each with its own identity, metrics port and log."""
    shards: int = 1
    """The operator's --shards (1: one process handles every AgentWorker)."""


def side(key: str, *, workers: int) -> Side:
    """The side named `key` for a fleet of `workers`: `watch` (long polls, as the operator
    ships), `no-watch` (`--no-worker-watch`), `one` (one process as it ships, titled for a
    comparison with shards) or `shards-N` (N processes with `--shards N`, N from 2 to
    MAX_SHARDS). ValueError naming the key and the choices otherwise."""
    if key == "watch":
        return Side(key=key, title="long polls (default)", operator_args=())
    if key == "no-watch":
        return Side(key=key, title="--no-worker-watch", operator_args=("--no-worker-watch",))
    if key == "one":
        return Side(key=key, title=f"1 process (all {workers:,} workers)", operator_args=())
    found = SHARDED.fullmatch(key)
    if found and 2 <= int(found[1]) <= MAX_SHARDS:
        n = int(found[1])
        return Side(
            key=key,
            title=f"{n} shards ({n} processes, --shards {n})",
            operator_args=("--shards", str(n)),
            processes=n,
            shards=n,
        )
    raise ValueError(
        f"side {key!r} is not one of watch, no-watch, one, shards-N (N from 2 to {MAX_SHARDS})"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    """What one operator process of a side handles."""

    shard: int
    """The shard whose Lease it holds (0 with one shard)."""
    shards: int
    agentworkers: tuple[str, ...]
    """The AgentWorkers of that shard, by name."""
    workers: int
    """Their fake workers."""


def roles(shape: FleetShape, namespace: str, shards: int) -> dict[int, Role]:
    """Each shard's Role: which of the benchmark's AgentWorkers (all in `namespace`) the
    operator's hash puts in it, and how many workers they have. Every shard is there, an
    empty one too (a hash may leave one without an AgentWorker)."""
    names: dict[int, list[str]] = {i: [] for i in range(shards)}
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        names[sharding.shard_of(namespace, name, shards)].append(name)
    return {
        i: Role(
            shard=i,
            shards=shards,
            agentworkers=tuple(found),
            workers=len(found) * shape.workers_per_agentworker,
        )
        for i, found in names.items()
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """What one process's /metrics says it does."""

    shard: int | None
    """The shard it holds (agentworker_operator_shard), None when it holds none (a standby,
    or not yet); with one shard the operator exports no such metric: 0 once it leads."""
    handled: frozenset[str]
    """AgentWorkers named in any of its per-AgentWorker metrics."""
    observed: frozenset[str]
    """AgentWorkers whose workers it has read (observation_duration_seconds)."""


def misplaced(expected: Mapping[int, Role], seen: Sequence[Seen]) -> list[str]:
    """What keeps a side's processes (`seen`, one each) from handling the split `expected`:
    a process with no shard, two on one shard, a process touching another shard's AgentWorker
    or not (yet) reading one of its own; [] when each holds its own shard and reads exactly its
    AgentWorkers."""
    wrong: list[str] = []
    holders: dict[int, int] = {}
    for process, found in enumerate(seen):
        if found.shard is None or found.shard not in expected:
            wrong.append(f"process {process} holds no shard (shard metric: {found.shard})")
            continue
        if found.shard in holders:
            wrong.append(f"processes {holders[found.shard]} and {process} both hold {found.shard}")
        holders[found.shard] = process
        own = frozenset(expected[found.shard].agentworkers)
        if stray := sorted(found.handled - own):
            wrong.append(
                f"process {process} (shard {found.shard}) handles other shards' {', '.join(stray)}"
            )
        if unread := sorted(own - found.observed):
            wrong.append(
                f"process {process} (shard {found.shard}) has not read the workers of "
                f"{len(unread)} of its AgentWorkers, e.g. {unread[0]}"
            )
    return wrong


def by_process(expected: Mapping[int, Role], shards: Sequence[int]) -> list[Role]:
    """Each process's Role, from the shard each holds (in process order)."""
    return [expected[shard] for shard in shards]

"""`Syncer.run` on real time over the simulated world: a change heard while a periodic round
waits on a worker that does not answer is decided at once, not after the scrape times out; a
webhook that comes while a round runs starts the next one.

The periodic round reads every worker before the fleet's turn (`Syncer.sync`); the rounds a
change starts run beside it (`Syncer.run`). Before, the loop awaited the periodic round, and a
bench of 1,000 workers (3 silent, each holding a round for its 2 s timeout) measured a mean of
0.87 s from a change heard to the decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Collection

import pytest

from agentworker_operator import guard, sync, webhooks
from tests.unit.operator.sim import run
from tests.unit.operator.sim import world as worlds
from tests.unit.operator.sim.run import STEP_S, Schedule

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

PERIOD_S = 0.3
"""The sync period, on real time once `Syncer.run` runs (the simulated warm-up uses it too)."""
DECIDED_WITHIN_S = 0.5


class SilentWorker(worlds.SimScraper):
    """One worker's /worker that does not answer until released; the others as the world's."""

    def __init__(self, world: worlds.World, ip: str) -> None:
        super().__init__(world)
        self.ip = ip
        self.asked = asyncio.Event()
        self.released = asyncio.Event()
        self.answered = asyncio.Event()

    async def fetch(self, ip: str) -> tuple[object, str]:
        if ip != self.ip:
            return await super().fetch(ip)
        self.asked.set()
        await self.released.wait()
        answer = await super().fetch(ip)
        self.answered.set()
        return answer


async def warm_up(world: worlds.World, schedule: Schedule) -> run.Operator:
    """The simulation's own steps until the fleet's workers serve and are followed."""
    operator = await run._start(world, schedule, None, late=False)
    pace = run._Pace(next_full=schedule.interval_s)
    while world.now < 10.0:
        world.now = round(world.now + STEP_S, 3)
        run._move(world, schedule)
        assert operator.watch is not None
        operator.watch.step()
        await run._rounds(world, schedule, operator, None, pace, None)
    return operator


async def test_a_change_heard_while_a_periodic_round_waits_on_a_silent_worker_is_decided() -> None:
    schedule = Schedule(
        seed=1,
        interval_s=PERIOD_S,
        min_replicas=2,
        max_replicas=4,
        arrivals_per_s=((0.0, 0.0),),
        watch=True,
    )
    world = run._world(schedule)
    operator = await warm_up(world, schedule)
    serving = [
        p for p in world.live_pods() if p.process is not None and p.process.registered(world.now)
    ]
    assert len(serving) == 2, [p.name for p in world.live_pods()]
    first, silent = serving
    scraper = SilentWorker(world, silent.ip)
    operator.syncer._scraper = scraper
    replicas = world.replicas

    loop = asyncio.create_task(operator.syncer.run())
    try:
        # the first periodic round, one period on, reads every worker and waits on the silent one
        await asyncio.wait_for(scraper.asked.wait(), 2 * PERIOD_S + 0.5)
        world.now = round(world.now + STEP_S, 3)  # the simulated clock moves on with the calls
        for _ in range(worlds.SLOTS):  # both workers fill up (the silent one's poll answers)
            world.place_call_on(first, 60.0)
            world.place_call_on(silent, 60.0)
        assert operator.watch is not None
        operator.watch.step()  # their long polls answer: the fleet's change is heard
        assert operator.syncer._changed
        heard = time.monotonic()
        while world.replicas == replicas:
            assert time.monotonic() - heard < DECIDED_WITHIN_S, "the change waited"
            await asyncio.sleep(0.01)
        # decided while the periodic round still waited on the silent worker
        assert not scraper.released.is_set()
        assert world.replicas > replicas
        # the periodic round goes on with what it read, but what the polls heard since is newer:
        # the first worker's answer it read before the calls does not undo them
        scraper.released.set()
        await asyncio.wait_for(scraper.answered.wait(), 1.0)
        await asyncio.sleep(0.05)
        key = (worlds.NAMESPACE, worlds.NAME)
        async with operator.syncer._turn(key):
            summary = operator.syncer.fleets[key].summary
        assert summary is not None
        assert summary.active_jobs == 2 * worlds.SLOTS
    finally:
        scraper.released.set()
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await operator.close()


class HeldRooms(worlds.SimRooms):
    """The guard's reads of LiveKit, counted; the first one does not answer until released."""

    def __init__(self, world: worlds.World) -> None:
        super().__init__(world)
        self.reads = 0
        self.asked = asyncio.Event()
        self.released = asyncio.Event()

    async def guard_rooms(
        self, agent_name: str, *, skip: Collection[str] = ()
    ) -> tuple[list[guard.Room], frozenset[str]]:
        self.reads += 1
        self.asked.set()
        await self.released.wait()
        return await super().guard_rooms(agent_name, skip=skip)


def caller_joined(room: str) -> webhooks.WebhookEvent:
    return webhooks.WebhookEvent(
        event=webhooks.EventType.PARTICIPANT_JOINED,
        api_key="key",
        room_name=room,
        room_sid=f"RM_{room}",
        participant_identity="caller",
        participant_is_agent=False,
    )


async def test_a_webhook_that_comes_while_a_round_runs_starts_the_next_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule = Schedule(
        seed=1,
        interval_s=PERIOD_S,
        min_replicas=1,
        max_replicas=2,
        arrivals_per_s=((0.0, 0.0),),
        watch=True,
        guard=True,
    )
    world = run._world(schedule)
    operator = await warm_up(world, schedule)
    syncer = operator.syncer
    # only webhooks start rounds here: no periodic one, no later look of a webhook's own
    syncer._config = dataclasses.replace(syncer._config, interval_s=60.0)
    monkeypatch.setattr(sync, "WEBHOOK_LOOKS_S", ())
    monkeypatch.setattr(sync, "WEBHOOK_GAP_S", 0.05)
    key = (worlds.NAMESPACE, worlds.NAME)
    rooms = HeldRooms(world)
    syncer.fleets[key].livekit = rooms

    loop = asyncio.create_task(syncer.run())
    try:
        await asyncio.sleep(0.1)
        syncer.on_webhook(caller_joined("first"))
        await asyncio.wait_for(rooms.asked.wait(), 0.5)
        assert rooms.reads == 1
        # the second caller joins while the first webhook's round reads LiveKit
        syncer.on_webhook(caller_joined("second"))
        rooms.released.set()
        heard = time.monotonic()
        while rooms.reads < 2:
            assert time.monotonic() - heard < DECIDED_WITHIN_S, "the webhook was lost"
            await asyncio.sleep(0.01)
    finally:
        rooms.released.set()
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await operator.close()

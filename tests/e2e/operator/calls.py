"""Calls for the operator's scaling tests: dispatches, callers in a room, and the calls' ledger.

A call is a dispatch of the test agent (`call_agent`) with a hold time. A real call also has a
caller: a participant (`caller`) that joins the room first, sees the agent join, and counts the
call as cut when the agent leaves before its hold time is up and does not come back within
REJOIN_S (an agent that comes back, e.g. after both rejoined a restarted LiveKit server, is an
interruption the outcome reports). A conversation is a real call with the session agent
(`session_agent`), whose caller talks and listens (`conversation`). Callers run on their own
event loop in a thread, so the tests' blocking kubectl polls never stall them. Every call
records its start and its end in the ledger file; `Ledger` reads it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from livekit import api, rtc

from tests.e2e.operator import conversation
from tests.rig import env as rig_env

T = TypeVar("T")
AGENT_JOIN_TIMEOUT_S = 60.0
REJOIN_S = 20.0
"""How long a caller waits for an agent that vanished to come back before counting the call cut."""
ENTRYPOINT = "tests.e2e.operator.call_agent:opts"


@dataclass(frozen=True, slots=True)
class CallerOutcome:
    """How a real call went, seen by its caller."""

    room: str
    agent_joined: bool
    held_s: float
    """From both being in the room to the agent leaving (or to when the caller gave up)."""
    said_bye: bool
    """The agent said "bye" before it left: it ran the call to its end."""
    cut: bool
    """The agent left without saying bye and did not come back within REJOIN_S, or left before
    the call's hold time was up, or the caller's own connection was lost for good."""
    interruptions: int = 0
    """Times the agent left and the same agent came back within REJOIN_S (e.g. both rejoined a
    restarted LiveKit server): the call went on, after a gap."""
    longest_gap_s: float = 0.0


class Ledger:
    """The JSON lines the agent's calls append (one file per test)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def started(self) -> dict[str, dict[str, Any]]:
        return {r["room"]: r for r in self.records() if r["event"] == "start"}

    def ended(self) -> dict[str, dict[str, Any]]:
        return {r["room"]: r for r in self.records() if r["event"] == "end"}

    def running_on(self, pod_ip: str) -> list[str]:
        ended = self.ended()
        return [
            room
            for room, r in self.started().items()
            if r["pod_ip"] == pod_ip and room not in ended
        ]


class Calls:
    """Dispatches calls to one agent name and runs their callers."""

    def __init__(self, rig: rig_env.RigEnv, agent_name: str, ledger: Ledger) -> None:
        self.rig = rig
        self.agent_name = agent_name
        self.ledger = ledger
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._callers: dict[str, Future[CallerOutcome]] = {}
        self._conversations: dict[str, Future[conversation.Conversation]] = {}
        self._watchers: dict[str, Future[None]] = {}
        self._hang_ups: dict[str, asyncio.Event] = {}
        self._timelines: dict[str, list[tuple[float, str, str]]] = {}

    def _run(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def start(self, count: int, *, hold_s: float, real: int = 0, prefix: str = "call") -> list[str]:
        """Start `count` calls (the first `real` with a caller in the room first); the rooms."""
        rooms = [f"{prefix}-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        connected: list[Future[None]] = []
        for room in rooms[:real]:
            ready: Future[None] = Future()
            self._callers[room] = self._run(self._caller(room, hold_s, ready))
            connected.append(ready)
        for ready in connected:
            ready.result(timeout=30)
        meta = {"hold_s": hold_s, "ledger": str(self.ledger.path)}
        for index, room in enumerate(rooms):
            metadata = json.dumps({**meta, "real": index < real})
            self._run(self._dispatch(room, metadata)).result(timeout=30)
        return rooms

    def talk(
        self,
        script: tuple[conversation.Text | conversation.Tone | conversation.Pause, ...],
        *,
        hold_s: float,
        prefix: str = "talk",
    ) -> str:
        """A conversation: its caller joins the room and talks through the script with the
        agent dispatched there, then stays until the agent ends the call; the room."""
        room = f"{prefix}-{uuid.uuid4().hex[:8]}"
        rig = self.rig
        self._conversations[room] = self._run(
            conversation.converse(
                rig.livekit_url, rig.livekit_api_key, rig.livekit_api_secret, room, script,
                stay_s=hold_s + 60,
            )
        )  # fmt: skip
        meta = {"hold_s": hold_s, "ledger": str(self.ledger.path), "real": True}
        self._run(self._dispatch(room, json.dumps(meta))).result(timeout=30)
        return room

    def conversation(self, room: str, timeout_s: float) -> conversation.Conversation:
        """How the room's conversation went, once its caller is done."""
        return self._conversations[room].result(timeout=timeout_s)

    def _caller_token(self, room_name: str) -> str:
        """A join token for the participant `caller` in the room."""
        token: str = (
            api.AccessToken(self.rig.livekit_api_key, self.rig.livekit_api_secret)
            .with_identity("caller")
            .with_grants(api.VideoGrants(room_join=True, room=room_name))
            .to_jwt()
        )
        return token

    async def _dispatch(self, room: str, metadata: str) -> None:
        request = api.CreateAgentDispatchRequest(
            agent_name=self.agent_name, room=room, metadata=metadata
        )
        async with api.LiveKitAPI(
            self.rig.livekit_url, self.rig.livekit_api_key, self.rig.livekit_api_secret
        ) as lk:
            await asyncio.wait_for(lk.agent_dispatch.create_dispatch(request), 10)

    async def _caller(self, room_name: str, hold_s: float, ready: Future[None]) -> CallerOutcome:
        token = self._caller_token(room_name)
        room = rtc.Room()
        joined, left, back, bye = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
        times: dict[str, float] = {}

        def on_join(participant: rtc.RemoteParticipant) -> None:
            times.setdefault("joined", time.monotonic())
            joined.set()
            back.set()

        def on_leave(participant: rtc.RemoteParticipant) -> None:
            times["left"] = time.monotonic()
            back.clear()
            left.set()

        def on_data(packet: rtc.DataPacket) -> None:
            if packet.data == b"bye":
                bye.set()

        def on_disconnected(reason: object) -> None:  # the caller's own connection, for good
            times["dropped"] = time.monotonic()
            left.set()

        room.on("participant_connected", on_join)
        room.on("participant_disconnected", on_leave)
        room.on("data_received", on_data)
        room.on("disconnected", on_disconnected)
        try:
            await room.connect(self.rig.livekit_url, token)
        except BaseException as error:
            ready.set_exception(error)
            raise
        ready.set_result(None)
        try:
            try:
                await asyncio.wait_for(joined.wait(), AGENT_JOIN_TIMEOUT_S)
            except TimeoutError:
                return CallerOutcome(
                    room=room_name, agent_joined=False, held_s=0.0, said_bye=False, cut=True
                )
            gaps: list[float] = []
            deadline = time.monotonic() + hold_s + 600
            while True:
                with suppress(TimeoutError):
                    await asyncio.wait_for(left.wait(), max(0.0, deadline - time.monotonic()))
                left.clear()
                if bye.is_set() or "dropped" in times or time.monotonic() >= deadline:
                    break
                gone_at = times["left"]
                try:  # the agent left without a bye: a gap if it comes back
                    await asyncio.wait_for(back.wait(), REJOIN_S)
                except TimeoutError:
                    break
                gaps.append(time.monotonic() - gone_at)
            end = times.get("dropped", times.get("left", time.monotonic()))
            held = end - times["joined"]
            return CallerOutcome(
                room=room_name,
                agent_joined=True,
                held_s=held,
                said_bye=bye.is_set(),
                cut=not bye.is_set() or held < hold_s - 2.0 or "dropped" in times,
                interruptions=len(gaps),
                longest_gap_s=max(gaps, default=0.0),
            )
        finally:
            await room.disconnect()

    def start_watched(self, count: int, *, hold_s: float, prefix: str = "watched") -> list[str]:
        """Real calls whose callers stay in the room, whatever the agent does, until `hang_up`;
        their agent stays too when its caller hangs up (`stay`). `timeline(room)` shows who came
        and went."""
        rooms = [f"{prefix}-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        for room in rooms:
            ready: Future[None] = Future()
            self._hang_ups[room] = self._run(self._make_event()).result(timeout=10)
            self._timelines[room] = []
            self._watchers[room] = self._run(self._watcher(room, ready))
            ready.result(timeout=30)
        meta = {"hold_s": hold_s, "ledger": str(self.ledger.path), "real": True, "stay": True}
        for room in rooms:
            self._run(self._dispatch(room, json.dumps(meta))).result(timeout=30)
        return rooms

    async def _make_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def _watcher(self, room_name: str, ready: Future[None]) -> None:
        token = self._caller_token(room_name)
        room = rtc.Room()
        timeline = self._timelines[room_name]
        room.on(
            "participant_connected",
            lambda p: timeline.append((time.monotonic(), "joined", p.identity)),
        )
        room.on(
            "participant_disconnected",
            lambda p: timeline.append((time.monotonic(), "left", p.identity)),
        )
        try:
            await room.connect(self.rig.livekit_url, token)
        except BaseException as error:
            ready.set_exception(error)
            raise
        ready.set_result(None)
        try:
            await asyncio.wait_for(self._hang_ups[room_name].wait(), 900)
        finally:
            await room.disconnect()

    def hang_up(self, room: str) -> None:
        """The watched call's caller leaves its room."""
        self._loop.call_soon_threadsafe(self._hang_ups[room].set)
        self._watchers[room].result(timeout=30)

    def timeline(self, room: str) -> list[tuple[float, str, str]]:
        """(monotonic time, joined or left, identity) of the other participants, so far."""
        return list(self._timelines[room])

    def caller_outcomes(self, timeout_s: float) -> list[CallerOutcome]:
        """Wait for every real call to end; how each went."""
        deadline = time.monotonic() + timeout_s
        return [
            future.result(timeout=max(1.0, deadline - time.monotonic()))
            for future in self._callers.values()
        ]

    def close(self) -> None:
        """Cancel the callers still waiting (each leaves its room), then stop the loop."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self._run(cancel_all()).result(timeout=30)
        except concurrent.futures.TimeoutError:
            # a caller stuck leaving a room must not turn a test's verdict into a teardown error
            logging.getLogger(__name__).warning("callers still leaving their rooms after 30 s")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


@contextmanager
def calls(rig: rig_env.RigEnv, agent_name: str, ledger_path: Path) -> Iterator[Calls]:
    running = Calls(rig, agent_name, Ledger(ledger_path))
    try:
        yield running
    finally:
        running.close()

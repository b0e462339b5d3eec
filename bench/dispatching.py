"""Dispatches and their entries: create explicit dispatches, read when each entrypoint ran.

Owns the LiveKit API calls the benchmark makes (create a dispatch, delete the rooms it made) and
the reading of a runtime's record file, where each job process appends the moment its entrypoint
was entered. It starts no worker.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from livekit import api

API_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.005


@dataclass(frozen=True, slots=True)
class Entry:
    """One entrypoint run: the job metadata it was given, when (Unix time) and in which pid."""

    token: str
    entered_at: float
    pid: int


class EntryLog:
    """The record file of one runtime, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Entry] = {}
        self._offset = 0
        self._partial = b""

    def poll(self) -> None:
        """Read the lines appended since the last poll."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            parts = line.decode().split()
            if len(parts) == 3:
                self.entries[parts[0]] = Entry(parts[0], float(parts[1]), int(parts[2]))

    async def wait_for(
        self, tokens: Collection[str], timeout_s: float, stall_s: float | None = None
    ) -> dict[str, Entry]:
        """The entries of `tokens` once all are there; only those seen when `timeout_s` is up,
        or when `stall_s` passed since the last new one (jobs that failed never write one)."""
        now = time.monotonic()
        deadline, last_new, seen = now + timeout_s, now, 0
        while True:
            self.poll()
            found = {t: self.entries[t] for t in tokens if t in self.entries}
            now = time.monotonic()
            if len(found) > seen:
                seen, last_new = len(found), now
            stalled = stall_s is not None and now - last_new > stall_s
            if len(found) == len(tokens) or now > deadline or stalled:
                return found
            await asyncio.sleep(POLL_INTERVAL_S)


@dataclass(slots=True)
class Dispatcher:
    """Explicit dispatches through livekit-api's AgentDispatchService; use inside `async with`."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)
    rooms: set[str] = field(default_factory=set)
    """Rooms created by dispatches and not deleted yet."""
    _api: api.LiveKitAPI | None = None

    async def __aenter__(self) -> Dispatcher:
        self._api = api.LiveKitAPI(self.url, self.api_key, self.api_secret)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.delete_rooms(list(self.rooms))
        finally:
            if self._api is not None:
                await self._api.aclose()
                self._api = None

    @property
    def lk(self) -> api.LiveKitAPI:
        if self._api is None:
            raise RuntimeError("Dispatcher used outside `async with`")
        return self._api

    async def check_server(self) -> None:
        """Fail early, with the URL, when the LiveKit server does not answer."""
        try:
            await asyncio.wait_for(self.lk.room.list_rooms(api.ListRoomsRequest()), API_TIMEOUT_S)
        except Exception as exc:
            raise RuntimeError(f"LiveKit server at {self.url} does not answer: {exc}") from exc

    async def dispatch(self, agent_name: str, room: str, metadata: str) -> None:
        """Create an explicit dispatch of `agent_name` into `room` (created when missing)."""
        self.rooms.add(room)
        req = api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        await asyncio.wait_for(self.lk.agent_dispatch.create_dispatch(req), API_TIMEOUT_S)

    async def delete_rooms(self, names: Iterable[str]) -> None:
        """Delete rooms made by dispatches, concurrently; a failure is reported, not raised."""
        names = list(names)
        results = await asyncio.gather(
            *(self._delete_room(name) for name in names), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            print(f"bench: could not delete {len(failed)} rooms: {failed[0]!r}", file=sys.stderr)

    async def _delete_room(self, name: str) -> None:
        try:
            await asyncio.wait_for(
                self.lk.room.delete_room(api.DeleteRoomRequest(room=name)), API_TIMEOUT_S
            )
        except api.TwirpError as exc:
            if exc.code != api.TwirpErrorCode.NOT_FOUND:  # the server closed it already
                raise
        self.rooms.discard(name)

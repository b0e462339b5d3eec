"""The LiveKit server's rooms, as call recovery and the dispatch guard need them.

This module owns the operator's only use of LiveKit's server API (livekit-api): counting a
room's callers and agents (RoomService.ListParticipants), dispatching an agent again with the
metadata of the room's original dispatch (AgentDispatchService), reading every room with its
dispatches of an agent as the guard's values (`guard_rooms`), and re-issuing a dispatch no
worker took (`reissue`). It only moves data: what to do is `recovery`'s and `guard`'s decision.
The API key and secret come from the AgentWorker's credentials Secret; they are held in memory
only and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Collection
from typing import TypeVar

import aiohttp
from livekit import api
from livekit.protocol import agent as agent_pb
from livekit.protocol import agent_dispatch, models

from agentworker_operator import guard

REQUEST_TIMEOUT_S = 5.0
GUARD_CONCURRENCY = 8
"""Rooms read at once by `guard_rooms` (a ListDispatch, and ListParticipants where needed)."""
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
"""The attribute the server gives an agent participant: the agent name it was dispatched as."""
_CALLER_KINDS = frozenset(
    kind
    for kind in models.ParticipantInfo.Kind.values()
    if kind not in (models.ParticipantInfo.AGENT, models.ParticipantInfo.EGRESS)
)
_JOB_STATUS = {
    agent_pb.JS_PENDING: guard.JobStatus.PENDING,
    agent_pb.JS_RUNNING: guard.JobStatus.RUNNING,
    agent_pb.JS_SUCCESS: guard.JobStatus.SUCCESS,
    agent_pb.JS_FAILED: guard.JobStatus.FAILED,
    agent_pb.JS_CANCELLED: guard.JobStatus.FAILED,
}
_T = TypeVar("_T")
_NO_DEFAULT = object()


class RoomsError(Exception):
    """LiveKit did not answer, or refused (the message says which; never a credential)."""


class Rooms:
    """A client of one LiveKit server with one AgentWorker's credentials; `aclose()` it."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        self._api = api.LiveKitAPI(url, api_key, api_secret, timeout=timeout)

    async def aclose(self) -> None:
        await self._api.aclose()

    async def participants(self, room: str, *, gone: str = "") -> tuple[int, int]:
        """(callers, agents) in the room now, not counting the agent `gone` (an identity)
        that LiveKit may still list while it waits for it to reconnect; (0, 0) when the room
        is gone."""
        try:
            answer = await asyncio.wait_for(
                self._api.room.list_participants(api.ListParticipantsRequest(room=room)),
                REQUEST_TIMEOUT_S,
            )
        except api.TwirpError as error:
            if error.code == api.TwirpErrorCode.NOT_FOUND:
                return 0, 0
            raise RoomsError(f"ListParticipants {room}: {error.code} {error.message}") from None
        except (TimeoutError, aiohttp.ClientError) as error:
            raise RoomsError(f"ListParticipants {room}: {type(error).__name__}") from None
        present = [p for p in answer.participants if not gone or p.identity != gone]
        agents = sum(1 for p in present if p.kind == models.ParticipantInfo.AGENT)
        return len(present) - agents, agents

    async def remove(self, room: str, identity: str) -> None:
        """Take a participant out of the room (a dead agent LiveKit still lists); best effort."""
        # gone already, or LiveKit removes it at its own timeout
        with contextlib.suppress(api.TwirpError, TimeoutError, aiohttp.ClientError):
            await asyncio.wait_for(
                self._api.room.remove_participant(
                    api.RoomParticipantIdentity(room=room, identity=identity)
                ),
                REQUEST_TIMEOUT_S,
            )

    async def dispatch_again(self, room: str, agent_name: str) -> str:
        """Create a new dispatch of the agent into the room, with its first dispatch's metadata.

        Returns the new dispatch's id.
        """
        try:
            dispatches = await asyncio.wait_for(
                self._api.agent_dispatch.list_dispatch(room_name=room), REQUEST_TIMEOUT_S
            )
            metadata = next((d.metadata for d in dispatches if d.agent_name == agent_name), "")
            created = await asyncio.wait_for(
                self._api.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(
                        agent_name=agent_name, room=room, metadata=metadata
                    )
                ),
                REQUEST_TIMEOUT_S,
            )
        except api.TwirpError as error:
            raise RoomsError(f"dispatch into {room}: {error.code} {error.message}") from None
        except (TimeoutError, aiohttp.ClientError) as error:
            raise RoomsError(f"dispatch into {room}: {type(error).__name__}") from None
        return str(created.id)

    async def guard_rooms(
        self, agent_name: str, *, skip: Collection[str] = ()
    ) -> tuple[list[guard.Room], frozenset[str]]:
        """Every room the server lists, as the guard reads it, and the rooms that could not be
        read. Rooms in `skip` (a worker reports a job there) are listed with no dispatch: they
        are served. In the others, the dispatches of `agent_name` are read, and where one has no
        job, the participants too. RoomsError when the rooms cannot be listed at all."""
        listed = await self._call("ListRooms", self._api.room.list_rooms(api.ListRoomsRequest()))
        limit = asyncio.Semaphore(GUARD_CONCURRENCY)

        async def read(room: models.Room) -> guard.Room | None:
            if room.name in skip:
                return guard.Room(name=room.name, callers=room.num_participants)
            async with limit:
                try:
                    return await self._guard_room(room, agent_name)
                except RoomsError:
                    return None

        read_rooms = await asyncio.gather(*(read(room) for room in listed.rooms))
        rooms = [room for room in read_rooms if room is not None]
        unread = frozenset(
            r.name for r, seen in zip(listed.rooms, read_rooms, strict=True) if not seen
        )
        return rooms, unread

    async def _guard_room(self, room: models.Room, agent_name: str) -> guard.Room:
        dispatches = await self._call(
            f"ListDispatch {room.name}",
            self._api.agent_dispatch.list_dispatch(room_name=room.name),
            missing=[],
        )
        ours = tuple(_dispatch(d) for d in dispatches if d.agent_name == agent_name)
        if not any(not d.jobs for d in ours):
            # a room with nothing to rescue needs no second request
            return guard.Room(name=room.name, callers=room.num_participants, dispatches=ours)
        answer = await self._call(
            f"ListParticipants {room.name}",
            self._api.room.list_participants(api.ListParticipantsRequest(room=room.name)),
            missing=api.ListParticipantsResponse(),
        )
        people = answer.participants
        agents = tuple(
            guard.Agent(identity=p.identity, agent_name=p.attributes.get(AGENT_NAME_ATTRIBUTE, ""))
            for p in people
            if p.kind == models.ParticipantInfo.AGENT
        )
        callers = sum(1 for p in people if p.kind in _CALLER_KINDS)
        return guard.Room(name=room.name, callers=callers, agents=agents, dispatches=ours)

    async def reissue(self, order: guard.Reissue) -> str:
        """Carry out a re-issue: delete the jobless records (the server then stops any launch of
        theirs that lands late), and, if the room still exists (a new dispatch would create it
        again), dispatch again with the same agent name, metadata, deployment, attributes and
        restart policy. The new dispatch's id; "" when the room had ended."""
        for dispatch_id in order.delete_ids:
            await self._call(
                f"DeleteDispatch {order.room}",
                self._api.agent_dispatch.delete_dispatch(dispatch_id, order.room),
                missing=None,
            )
        found = await self._call(
            "ListRooms", self._api.room.list_rooms(api.ListRoomsRequest(names=[order.room]))
        )
        if not found.rooms:
            return ""
        d = order.dispatch
        created = await self._call(
            f"CreateDispatch {order.room}",
            self._api.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=d.agent_name,
                    room=order.room,
                    metadata=d.metadata,
                    deployment=d.deployment,
                    attributes=dict(d.attributes),
                    restart_policy=(
                        agent_dispatch.JRP_NEVER
                        if d.restart_policy is guard.RestartPolicy.NEVER
                        else agent_dispatch.JRP_ON_FAILURE
                    ),
                )
            ),
        )
        return str(created.id)

    async def _call(
        self, what: str, request: Awaitable[_T], *, missing: object = _NO_DEFAULT
    ) -> _T:
        """One request with the timeout; a NOT_FOUND gives `missing` when one is given."""
        try:
            return await asyncio.wait_for(request, REQUEST_TIMEOUT_S)
        except api.TwirpError as error:
            if error.code == api.TwirpErrorCode.NOT_FOUND and missing is not _NO_DEFAULT:
                return missing  # type: ignore[return-value]
            raise RoomsError(f"{what}: {error.code} {error.message}") from None
        except (TimeoutError, aiohttp.ClientError) as error:
            raise RoomsError(f"{what}: {type(error).__name__}") from None


def _dispatch(raw: agent_dispatch.AgentDispatch) -> guard.Dispatch:
    return guard.Dispatch(
        id=raw.id,
        agent_name=raw.agent_name,
        metadata=raw.metadata,
        deployment=raw.deployment,
        attributes=tuple(sorted(raw.attributes.items())),
        restart_policy=(
            guard.RestartPolicy.NEVER
            if raw.restart_policy == agent_dispatch.JRP_NEVER
            else guard.RestartPolicy.ON_FAILURE
        ),
        created_at_s=raw.state.created_at / 1e9,
        jobs=tuple(
            guard.Job(
                id=job.id,
                status=_JOB_STATUS.get(job.state.status, guard.JobStatus.RUNNING),
                participant_identity=job.state.participant_identity,
                started_at_s=job.state.started_at / 1e9,
            )
            for job in raw.state.jobs
        ),
    )

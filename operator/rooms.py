"""The LiveKit server's rooms, as call recovery needs them: who is in a room, dispatch again.

This module owns the operator's only use of LiveKit's server API (livekit-api): counting a
room's callers and agents (RoomService.ListParticipants) and dispatching an agent again with the
metadata of the room's original dispatch (AgentDispatchService). It only moves data: what to do
is `recovery`'s decision. The API key and secret come from the AgentWorker's credentials Secret;
they are held in memory only and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from livekit import api
from livekit.protocol import models

REQUEST_TIMEOUT_S = 5.0


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

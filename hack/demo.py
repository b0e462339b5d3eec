"""`make demo`: the rig up, then the cluster and the LiveKit server shown working.

Run through the Makefile, which starts the rig and exports `.rig/env` first.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from livekit import api as lkapi

from tests.rig import env as rig_env


def show(title: str, argv: list[str]) -> None:
    print(f"\n$ {' '.join(argv)}    # {title}", flush=True)
    subprocess.run(argv, check=True, env=dict(os.environ))


async def livekit_rooms(rig: rig_env.RigEnv) -> list[str]:
    url = rig.livekit_url.replace("ws://", "http://")
    async with lkapi.LiveKitAPI(url, rig.livekit_api_key, rig.livekit_api_secret) as client:
        await client.room.create_room(lkapi.CreateRoomRequest(name="demo-room"))
        rooms = await client.room.list_rooms(lkapi.ListRoomsRequest())
        return [room.name for room in rooms.rooms]


def main() -> int:
    rig = rig_env.load()
    show("the API server's version", ["kubectl", "version"])
    show("the process runner's Node", ["kubectl", "get", "nodes", "-o", "wide"])
    show("the control plane's pods and controllers at work", ["kubectl", "get", "ns"])
    rooms = asyncio.run(livekit_rooms(rig))
    print(f"\nLiveKit at {rig.livekit_url}: RoomService.ListRooms -> {rooms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

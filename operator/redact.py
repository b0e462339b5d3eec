"""How the operator names callers' data where people read it: logs, Events, status.

Room names often carry the caller's phone number (SIP dispatch rules make them from it), so a
room is named by a reference instead: `room:` and the first 12 hex digits of the SHA-256 of its
name. Whoever knows a room's name can find it (`printf %s "$ROOM" | sha256sum | cut -c1-12`);
the reference alone does not give the name back. It does no I/O.
"""

from __future__ import annotations

import hashlib


def room_ref(name: str) -> str:
    """The reference of a room, for logs and Events."""
    return "room:" + hashlib.sha256(name.encode()).hexdigest()[:12]

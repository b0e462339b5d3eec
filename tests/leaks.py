"""The secrets the rig's tests handle, written down for the leak check that runs after them.

A test's namespace, with its Secrets, is deleted when the test ends; the leak check
(tests/e2e_after) runs after the whole e2e suite. So before a test's fixtures are torn down,
`record` copies the secret values of its namespace (the control tokens, the control key, the
LiveKit credentials) into RECORD, a file only root may read in the git-ignored rig directory,
outside everything the check searches. `needles` turns a secret into the byte strings that betray
it: itself and its base64 forms at any alignment (standard and URL-safe).
"""

from __future__ import annotations

import base64
import os
from typing import Any

from tests.rig import env as rig_env

RECORD = rig_env.RIG_DIR / "leak-check" / "secrets"
E2E_BASETEMP = rig_env.RIG_DIR / "pytest-e2e"
"""`make e2e` runs the e2e suite with --basetemp here, so the logs it writes are found after it."""
MIN_NEEDLE = 12
"""Shorter strings would match by chance; every real secret here is longer."""


def secret_values(secret: dict[str, Any]) -> list[bytes]:
    """The values of a Secret (as the API returns it, data base64) that count as secrets.

    The control tokens (`*-control`), the control key (`*-control-key`), and LIVEKIT_API_SECRET of
    any Secret; not API keys or other non-secret entries.
    """
    name: str = secret["metadata"]["name"]
    data: dict[str, str] = secret.get("data") or {}
    if name.endswith("-control"):
        keys = ["token"]
    elif name.endswith("-control-key"):
        keys = list(data)
    else:
        keys = ["LIVEKIT_API_SECRET"]
    return [base64.b64decode(data[k]) for k in keys if data.get(k)]


def record(secrets: list[dict[str, Any]]) -> None:
    """Append the secret values of these Secrets to RECORD (one base64 line each)."""
    values = [v for s in secrets for v in secret_values(s)]
    if not values:
        return
    RECORD.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.writelines(base64.b64encode(v).decode() + "\n" for v in values)


def recorded() -> set[bytes]:
    """Every value `record` wrote down, in this and earlier runs."""
    if not RECORD.exists():
        return set()
    return {base64.b64decode(line) for line in RECORD.read_text().split()}


def needles(secret: bytes) -> set[bytes]:
    """The secret, its hex, and every base64 form of it not depending on the bytes around it."""
    found = {secret, secret.hex().encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret).rstrip(b"=")
        # characters made only of the secret's bits: after the shift's, before the next bytes'
        start, end = -(-8 * shift // 6), 8 * (shift + len(secret)) // 6
        stable = encoded[start:end]
        found |= {stable, stable.replace(b"+", b"-").replace(b"/", b"_")}
    return {n for n in found if len(n) >= MIN_NEEDLE}

"""The rig as the tests see it: addresses and credentials read from `.rig/env`.

`make rig` writes `.rig/env`; `make e2e` exports it. This module only reads; it starts nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RIG_DIR = REPO_ROOT / ".rig"
ENV_FILE = RIG_DIR / "env"


@dataclass(frozen=True, slots=True, kw_only=True)
class RigEnv:
    """Where the running rig's components answer."""

    kubeconfig: Path
    """Admin kubeconfig (O=system:masters client certificate)."""
    livekit_url: str
    """ws://127.0.0.1:PORT of the LiveKit server."""
    livekit_api_key: str
    livekit_api_secret: str = field(repr=False)
    node_name: str
    """The Node the process runner plays the kubelet for."""
    bin_path: str
    """PATH entries with the rig's kubectl and helm first."""
    logs_dir: Path
    livekit_webhook_port: int = 0
    """The loopback port the LiveKit server sends its webhooks to (0: none)."""


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def load() -> RigEnv:
    """The rig from the environment, falling back to `.rig/env`; a clear error when neither."""
    values = dict(_read_env_file(ENV_FILE)) if ENV_FILE.exists() else {}
    values.update({k: v for k, v in os.environ.items() if k.startswith(("RIG_", "LIVEKIT_"))})
    if "KUBECONFIG" in os.environ and "RIG_KUBECONFIG" not in values:
        values["RIG_KUBECONFIG"] = os.environ["KUBECONFIG"]
    missing = [k for k in ("RIG_KUBECONFIG", "LIVEKIT_URL", "LIVEKIT_API_KEY") if k not in values]
    if missing:
        raise RuntimeError(f"the rig is not running (missing {', '.join(missing)}): run `make rig`")
    return RigEnv(
        kubeconfig=Path(values["RIG_KUBECONFIG"]),
        livekit_url=values["LIVEKIT_URL"],
        livekit_api_key=values["LIVEKIT_API_KEY"],
        livekit_api_secret=values["LIVEKIT_API_SECRET"],
        node_name=values.get("RIG_NODE_NAME", "rig-node"),
        bin_path=values.get("RIG_BIN_PATH", ""),
        logs_dir=Path(values.get("RIG_LOGS", str(RIG_DIR / "logs"))),
        livekit_webhook_port=int(values.get("RIG_LIVEKIT_WEBHOOK_PORT", "0")),
    )

"""The AgentWorker companion: the operator's worker contract for an unmodified livekit-agents
worker.

Loaded into the worker's own interpreter when AGENTWORKER_COMPANION=1 (by an injected
`sitecustomize`, or by the .pth file of the installed `agentworker-companion` distribution), it
waits for `livekit.agents.worker` to be imported and then, on a tested livekit-agents line,
wraps `AgentServer`: the spec's options from AGENT_* and POD_IP, and an HTTP server on the
contract port (/healthz, /readyz, /worker in this project's format, /metrics, POST and DELETE
/retire). On any other version, or when anything it needs is missing, it logs why and steps
aside: the worker runs as if it were not there. Pure Python, for Python 3.9 and later; it
imports only what livekit-agents itself needs (aiohttp, prometheus_client).
"""

from __future__ import annotations

# pyproject.toml's version, stated again (hack/check_version.py keeps them equal): the copies the
# operator injects into workers' images have no distribution metadata to read it from.
__version__ = "0.3.0"

TESTED_LINES = ((1, 4), (1, 6), (1, 8))
"""The livekit-agents minor lines the companion is tested on (their newest patch releases:
1.4.6, 1.6.10, 1.8.9). Every release of these lines keeps the internals it wraps."""

ENABLE_VARIABLE = "AGENTWORKER_COMPANION"
"""Set to "1" by the operator; without it the companion does nothing at all."""

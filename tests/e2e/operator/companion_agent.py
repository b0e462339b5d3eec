"""A livekit-agents agent written as LiveKit's current docs teach, for the companion's e2e tests.

Run by an official worker's own interpreter (livekit-agents from PyPI in its own venv), as
`python tests/e2e/operator/companion_agent.py start`: nothing of this project is imported, and
nothing of the operator's contract is in it. Its agent name is set in code and it binds
livekit-agents' defaults (all interfaces, port 8081): with the companion, the spec's agentName
wins and the worker serves on the pod's own address; without it, every such worker on the rig
would fight for 0.0.0.0:8081. Its calls are `official_agent`'s (the script's directory is on
sys.path): a dispatch's metadata says how long a call lasts and where to record it, and the
load is the share of 4 calls in use.
"""

from __future__ import annotations

from livekit.agents import AgentServer, cli
from official_agent import entrypoint, load  # type: ignore[import-not-found]

server = AgentServer()
server.load_fnc = load
server.rtc_session(agent_name="set-in-code")(entrypoint)

if __name__ == "__main__":
    cli.run_app(server)

"""Agents written as LiveKit's current docs write them: an `AgentServer` with its options and
an entrypoint registered with `@server.rtc_session(...)`. Each would import its names from
`livekit.agents`; `from worker_runtime import ...` in that place is their only change.

Run one from the repository root with `python -m examples.server.entrypoint start`, or with
`agent-worker start examples.server.entrypoint:server` (naming the decorated function,
`examples.server.entrypoint:my_agent`, runs it with its server's options too).
"""

"""The seeds' example agents, with `from worker_runtime import ...` as their only change.

Run one with `agent-worker start examples.agents.basic:entrypoint` from the repository root, or
`python -m examples.agents.basic start`.
"""

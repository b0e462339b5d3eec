"""The AgentWorker operator (import name `agentworker_operator`).

Pure core: `fields` (reading untrusted JSON), `spec` (the typed spec), `builders` (desired
objects), `status` (conditions). Thin shell: `handlers` (kopf), `kube` (API calls), `lease`
(leader election), `metrics`, `settings`, and `__main__` (the `agent-operator` console script).
"""

"""The AgentWorker operator (import name `agentworker_operator`).

Pure core: `spec` (parse the spec), `builders` (desired objects), `status` (conditions).
Thin shell: `handlers` (kopf), `kube` (API calls), `lease` (leader election), `metrics`,
`settings`, and `__main__` (the `agent-operator` console script).
"""

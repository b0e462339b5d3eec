"""A deterministic simulation of the operator's world, for the real sync loop and reconcile.

`world` is the cluster (Deployment and ReplicaSet controllers, pods, quota, watches), the
workers (calls, the retire handshake, stalls, reconnects) and LiveKit (rooms, their dispatch
records, agents, offers to workers, webhooks) on simulated time; `polls` the operator's long
polls of the workers (its change stream); `draw` draws what happens to them; `run` drives the
real `Syncer` and `handlers.reconcile` through a schedule and checks the invariants after every
step, `promises` those of the dispatch guard.
"""

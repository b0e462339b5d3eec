"""Prometheus metrics of one worker, in a registry of its own.

Owns the metric names and labels. Only counts and sets; it decides nothing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class WorkerMetrics:
    """The worker's metrics: jobs by outcome, active jobs, load, registration, latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_started = Counter(
            "agentworker_worker_jobs_started", "Jobs whose entrypoint ran.", registry=r
        )
        self.jobs_succeeded = Counter(
            "agentworker_worker_jobs_succeeded", "Jobs that ended cleanly.", registry=r
        )
        self.jobs_failed = Counter(
            "agentworker_worker_jobs_failed", "Jobs that failed, by reason.", ["reason"], registry=r
        )
        self.active_jobs = Gauge("agentworker_worker_active_jobs", "Jobs running now.", registry=r)
        self.load = Gauge(
            "agentworker_worker_load", "Load last reported to LiveKit (0-1).", registry=r
        )
        self.registered = Gauge(
            "agentworker_worker_registered", "1 while registered with LiveKit.", registry=r
        )
        self.draining = Gauge("agentworker_worker_draining", "1 while draining.", registry=r)
        self.retired = Gauge(
            "agentworker_worker_retired",
            "1 while retired (POST /retire), until it expires.",
            registry=r,
        )
        self.idle_processes = Gauge(
            "agentworker_worker_idle_processes",
            "Prewarmed processes waiting for a job.",
            registry=r,
        )
        self.job_start_latency = Histogram(
            "agentworker_worker_job_start_latency_seconds",
            "Time from the job assignment to its entrypoint being called.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
